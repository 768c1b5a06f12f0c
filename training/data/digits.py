"""scikit-learn's bundled 8x8 handwritten digits: real images, no download, works offline."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from training.data.base import DatasetError, ImageDataset

DIGIT_LABELS: tuple[str, ...] = tuple(str(i) for i in range(10))

# The split is part of the data set, not of a training run: a fixed seed keeps the test set
# identical whatever seed the trainer uses, so reported accuracies stay comparable.
SPLIT_SEED = 0
TEST_FRACTION = 0.2


def load_digits() -> ImageDataset:
    """1797 8x8 grey digits, split stratified 80/20 -> 1437 train / 360 test."""
    # Imported here so the rest of training.data works without scikit-learn.
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as exc:
        raise DatasetError(
            "digits: needs scikit-learn, which ships the 8x8 digits; "
            "install it with `pip install scikit-learn` (it is in the train extra)"
        ) from exc

    bunch = sk_load_digits()
    # Pixel values are integers 0..16; stretch them to the full 0..255 range of uint8.
    images = np.round(np.asarray(bunch.images, dtype=np.float64) * 255 / 16).astype(np.uint8)
    images = images.reshape(-1, 8, 8, 1)
    targets = np.asarray(bunch.target, dtype=np.int64)

    return stratified_split(
        "digits",
        images,
        targets,
        test_size=TEST_FRACTION,
        seed=SPLIT_SEED,
        source=(
            "scikit-learn bundled digits (UCI optdigits 8x8), stratified 80/20 split "
            f"with seed {SPLIT_SEED}"
        ),
    )


def stratified_split(
    name: str,
    images: NDArray[np.uint8],
    labels: NDArray[np.int64],
    *,
    test_size: float | int,
    seed: int,
    source: str,
) -> ImageDataset:
    """A digit data set split into train and test with every class in the same proportion."""
    from sklearn.model_selection import train_test_split

    train_x, test_x, train_y, test_y = train_test_split(
        images, labels, test_size=test_size, stratify=labels, random_state=seed
    )
    return ImageDataset(
        name=name,
        train_images=np.ascontiguousarray(train_x),
        train_labels=np.ascontiguousarray(train_y),
        test_images=np.ascontiguousarray(test_x),
        test_labels=np.ascontiguousarray(test_y),
        labels=DIGIT_LABELS,
        source=source,
    )
