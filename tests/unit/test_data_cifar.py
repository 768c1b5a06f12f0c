"""CIFAR-10 reader: pixel layout, label names, and a restricted unpickler that runs nothing."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from tests.unit.datafiles import (
    CIFAR_NAMES,
    cifar_batch_bytes,
    random_cifar_batch,
    small_cifar_set,
    write_cifar_set,
)
from training.data import DatasetError, load_dataset
from training.data.cifar import CIFAR10_LABELS, read_batch


@pytest.mark.parametrize("protocol", ["py2", 2, pickle.HIGHEST_PROTOCOL])
def test_round_trip(tmp_path: Path, protocol: int | str) -> None:
    # "py2" mimics the official files (Python 2, numpy.core names, str as bytes); the Python 3
    # protocols cover batches re-pickled by newer code (numpy._core names, _frombuffer).
    train, test = small_cifar_set(tmp_path, per_batch=4, n_test=3, protocol=protocol)

    ds = load_dataset("cifar10", tmp_path)

    assert ds.name == "cifar10"
    assert ds.train_images.shape == (20, 32, 32, 3)
    assert ds.test_images.shape == (3, 32, 32, 3)
    assert (ds.color, ds.image_size, ds.channels) == ("RGB", (32, 32), 3)
    assert ds.labels == tuple(CIFAR_NAMES)
    np.testing.assert_array_equal(ds.train_labels, [label for _, ls in train for label in ls])
    np.testing.assert_array_equal(ds.test_labels, test[1])
    # The whole layout, not just one pixel: rows are channel-major 3x32x32.
    expected_train = np.concatenate([d for d, _ in train]).reshape(-1, 3, 32, 32)
    np.testing.assert_array_equal(ds.train_images, expected_train.transpose(0, 2, 3, 1))
    assert ds.train_images.flags.c_contiguous
    assert ds.test_images.flags.writeable


@pytest.mark.parametrize("channel", [0, 1, 2])
def test_known_pixel_lands_in_its_channel(tmp_path: Path, channel: int) -> None:
    data = np.zeros((2, 3072), dtype=np.uint8)
    row, col = 5, 17
    # Image 1, channel `channel`, pixel (row, col): offset channel*1024 + row*32 + col.
    data[1, channel * 1024 + row * 32 + col] = 200
    path = tmp_path / "data_batch_1"
    path.write_bytes(cifar_batch_bytes(data, [3, 4]))

    images, labels = read_batch(path)

    assert images.shape == (2, 32, 32, 3)
    assert images[1, row, col, channel] == 200
    assert int(images.sum()) == 200  # nowhere else
    np.testing.assert_array_equal(labels, [3, 4])


def test_batch_folder_from_archive_is_found(tmp_path: Path) -> None:
    small_cifar_set(tmp_path / "cifar-10-batches-py")
    ds = load_dataset("cifar10", tmp_path)
    assert str(tmp_path / "cifar-10-batches-py") in ds.source


def test_missing_meta_falls_back_to_standard_names(tmp_path: Path) -> None:
    small_cifar_set(tmp_path)
    (tmp_path / "batches.meta").unlink()

    ds = load_dataset("cifar10", tmp_path)

    assert ds.labels == CIFAR10_LABELS
    assert ds.labels[0] == "airplane"


def test_missing_batches_names_them(tmp_path: Path) -> None:
    small_cifar_set(tmp_path)
    (tmp_path / "data_batch_3").unlink()

    with pytest.raises(DatasetError) as err:
        load_dataset("cifar10", tmp_path)

    message = str(err.value)
    assert "files not found" in message
    assert "data_batch_3" in message
    assert "test_batch" in message
    assert "--download" in message
    assert str(tmp_path) in message


class _Evil:
    """Pickles as a call to os.system."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (self.command,)


def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path: Path) -> None:
    small_cifar_set(tmp_path)
    marker = tmp_path / "pwned"
    payload = {b"data": _Evil(f"touch {marker}"), b"labels": [1]}
    (tmp_path / "data_batch_2").write_bytes(pickle.dumps(payload, protocol=2))
    # Make sure the payload is live: a plain pickle.load would run it.
    assert b"system" in (tmp_path / "data_batch_2").read_bytes()

    with pytest.raises(DatasetError) as err:
        load_dataset("cifar10", tmp_path)

    message = str(err.value)
    assert "refuses to load pickle global" in message
    assert "system" in message  # os.system pickles as posix.system (nt.system on Windows)
    assert "data_batch_2" in message
    assert not marker.exists()


@pytest.mark.parametrize("target", ["builtins.eval", "subprocess.Popen", "numpy.load"])
def test_other_globals_are_refused(tmp_path: Path, target: str) -> None:
    module, name = target.rsplit(".", 1)
    # PROTO 2, GLOBAL module\nname\n, a string argument, TUPLE1, REDUCE, STOP
    evil = b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"U\x041+1;\x85R."
    path = tmp_path / "test_batch"
    path.write_bytes(evil)

    with pytest.raises(DatasetError, match=f"refuses to load pickle global {target}"):
        read_batch(path)


def test_malicious_meta_is_refused(tmp_path: Path) -> None:
    small_cifar_set(tmp_path)
    marker = tmp_path / "pwned"
    (tmp_path / "batches.meta").write_bytes(
        pickle.dumps({b"label_names": _Evil(f"touch {marker}")})
    )

    with pytest.raises(DatasetError, match="refuses to load pickle global"):
        load_dataset("cifar10", tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize("keep", [1, 100, 2000, -5])
def test_truncated_pickle(tmp_path: Path, keep: int) -> None:
    small_cifar_set(tmp_path)
    path = tmp_path / "test_batch"
    path.write_bytes(path.read_bytes()[:keep])

    with pytest.raises(DatasetError) as err:
        load_dataset("cifar10", tmp_path)

    message = str(err.value)
    assert "corrupt or truncated pickle" in message
    assert str(path) in message


def test_garbage_file(tmp_path: Path) -> None:
    small_cifar_set(tmp_path)
    (tmp_path / "data_batch_1").write_bytes(b"<html>404 Not Found</html>")

    with pytest.raises(DatasetError, match="corrupt or truncated pickle"):
        load_dataset("cifar10", tmp_path)


def test_wrong_row_length(tmp_path: Path) -> None:
    train = [random_cifar_batch(2, seed=i) for i in range(5)]
    train[4] = random_cifar_batch(2, seed=4, row_length=3 * 16 * 16)
    write_cifar_set(tmp_path, train, random_cifar_batch(2, seed=9), names=CIFAR_NAMES)

    with pytest.raises(DatasetError) as err:
        load_dataset("cifar10", tmp_path)

    message = str(err.value)
    assert "data_batch_5" in message
    assert "768 values, expected 3072" in message


def test_label_count_mismatch(tmp_path: Path) -> None:
    data, labels = random_cifar_batch(4, seed=0)
    path = tmp_path / "data_batch_1"
    path.write_bytes(cifar_batch_bytes(data, labels[:3]))

    with pytest.raises(DatasetError, match="4 images but labels of shape"):
        read_batch(path)


def test_label_out_of_range(tmp_path: Path) -> None:
    data, _ = random_cifar_batch(3, seed=0)
    path = tmp_path / "data_batch_1"
    path.write_bytes(cifar_batch_bytes(data, [0, 10, 2]))

    with pytest.raises(DatasetError, match=r"labels must lie in 0\.\.9, found 0\.\.10"):
        read_batch(path)


def test_not_a_dict(tmp_path: Path) -> None:
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps([1, 2, 3], protocol=2))

    with pytest.raises(DatasetError, match="expected a pickled dict"):
        read_batch(path)


def test_wrong_dtype(tmp_path: Path) -> None:
    path = tmp_path / "data_batch_1"
    batch = {b"data": np.zeros((2, 3072), dtype=np.float32), b"labels": [0, 1]}
    path.write_bytes(pickle.dumps(batch, protocol=2))

    with pytest.raises(DatasetError, match="must be a 2-D uint8 array"):
        read_batch(path)


def test_meta_with_wrong_number_of_names(tmp_path: Path) -> None:
    small_cifar_set(tmp_path)
    (tmp_path / "batches.meta").write_bytes(
        pickle.dumps({b"label_names": [b"a", b"b"]}, protocol=2)
    )

    with pytest.raises(DatasetError, match="2 class names, expected 10"):
        load_dataset("cifar10", tmp_path)
