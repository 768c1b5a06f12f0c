"""The bundled 8x8 digits: real data, offline, with a split that never moves."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from training.data import DATASETS, DatasetError, ImageDataset, load_dataset


def test_shapes_and_types() -> None:
    ds = load_dataset("digits")

    assert ds.name == "digits"
    assert ds.train_images.shape == (1437, 8, 8, 1)
    assert ds.test_images.shape == (360, 8, 8, 1)
    assert ds.train_labels.shape == (1437,)
    assert ds.test_labels.shape == (360,)
    assert ds.train_images.dtype == np.uint8
    assert ds.train_labels.dtype == np.int64
    assert (ds.color, ds.image_size, ds.channels) == ("L", (8, 8), 1)
    assert ds.labels == tuple(str(i) for i in range(10))
    assert "digits" in DATASETS


def test_values_use_the_full_uint8_range() -> None:
    ds = load_dataset("digits")
    images = np.concatenate([ds.train_images, ds.test_images])

    assert images.min() == 0
    assert images.max() == 255
    # 0..16 scaled by 255/16 and rounded: exactly 17 distinct grey levels.
    expected_levels = np.round(np.arange(17) * 255 / 16).astype(np.uint8)
    assert set(np.unique(images).tolist()) <= set(expected_levels.tolist())
    assert len(np.unique(images)) > 10


def test_matches_sklearn_pixels() -> None:
    from sklearn.datasets import load_digits

    raw = load_digits()
    ds = load_dataset("digits")
    # Every image in the split is one of sklearn's, scaled: compare via the sorted pixel sums.
    ours = np.concatenate([ds.train_images, ds.test_images]).astype(np.int64)
    theirs = np.round(raw.images * 255 / 16).astype(np.int64)
    np.testing.assert_array_equal(
        np.sort(ours.reshape(len(ours), -1).sum(axis=1)),
        np.sort(theirs.reshape(len(theirs), -1).sum(axis=1)),
    )
    labels = np.concatenate([ds.train_labels, ds.test_labels])
    np.testing.assert_array_equal(np.bincount(labels), np.bincount(raw.target))


def test_test_split_has_every_class_stratified() -> None:
    ds = load_dataset("digits")
    counts = np.bincount(ds.test_labels, minlength=10)

    assert (counts > 0).all()
    # Stratified 20%: each class has ~36 of ~180 images in the test split.
    assert counts.min() >= 35
    assert counts.max() <= 37


def test_split_is_identical_across_calls() -> None:
    first = load_dataset("digits")
    second = load_dataset("digits")

    np.testing.assert_array_equal(first.train_images, second.train_images)
    np.testing.assert_array_equal(first.train_labels, second.train_labels)
    np.testing.assert_array_equal(first.test_images, second.test_images)
    np.testing.assert_array_equal(first.test_labels, second.test_labels)


def test_split_ignores_global_random_state() -> None:
    np.random.seed(123)
    first = load_dataset("digits")
    np.random.seed(456)
    second = load_dataset("digits")

    np.testing.assert_array_equal(first.test_labels, second.test_labels)
    np.testing.assert_array_equal(first.test_images, second.test_images)


# ---------------------------------------------------------------------------------------------
# The registry and ImageDataset's own checks (digits is the data set that needs no files).


def test_unknown_name_lists_known_ones() -> None:
    with pytest.raises(DatasetError) as err:
        load_dataset("svhn")

    message = str(err.value)
    assert "'svhn'" in message
    for name in DATASETS:
        assert name in message


def _arrays(
    n_train: int = 4, n_test: int = 2, shape: tuple[int, ...] = (8, 8, 1)
) -> dict[str, Any]:
    return {
        "train_images": np.zeros((n_train, *shape), dtype=np.uint8),
        "train_labels": np.zeros(n_train, dtype=np.int64),
        "test_images": np.zeros((n_test, *shape), dtype=np.uint8),
        "test_labels": np.zeros(n_test, dtype=np.int64),
    }


def test_image_dataset_accepts_valid_rgb() -> None:
    ds = ImageDataset(name="t", labels=("a", "b"), source="test", **_arrays(shape=(4, 6, 3)))
    assert (ds.color, ds.image_size, ds.channels, ds.num_classes) == ("RGB", (4, 6), 3, 2)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"train_images": np.zeros((4, 8, 8, 1), dtype=np.float32)}, "must be uint8"),
        ({"test_images": np.zeros((2, 8, 8), dtype=np.uint8)}, r"shape \(N, H, W, C\)"),
        ({"train_images": np.zeros((4, 8, 8, 2), dtype=np.uint8)}, "C = 1 or 3"),
        ({"train_labels": np.zeros(4, dtype=np.int32)}, "must be int64"),
        ({"train_labels": np.zeros(3, dtype=np.int64)}, "4 images but 3 labels"),
        ({"test_labels": np.array([0, 2], dtype=np.int64)}, r"0\.\.1 \(2 classes\), found 0\.\.2"),
        ({"test_labels": np.array([-1, 0], dtype=np.int64)}, "must lie in"),
        ({"test_images": np.zeros((2, 7, 8, 1), dtype=np.uint8)}, "train images are"),
        ({"train_images": [[0]]}, "must be a numpy array"),
    ],
)
def test_image_dataset_rejects(change: dict[str, Any], expected: str) -> None:
    arrays = _arrays() | change
    with pytest.raises(DatasetError, match=expected):
        ImageDataset(name="t", labels=("a", "b"), source="test", **arrays)
