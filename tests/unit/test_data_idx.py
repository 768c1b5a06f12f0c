"""MNIST / Fashion-MNIST IDX reader: exact round trips and clear errors on bad files."""

from __future__ import annotations

import gzip
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.unit.datafiles import idx_bytes, random_idx_arrays, write_idx_set
from training.data import DatasetError, load_dataset
from training.data.idx import (
    FASHION_MNIST_LABELS,
    IDX_FILES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    read_idx_images,
)


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_round_trip_is_exact(tmp_path: Path, name: str, gz: bool) -> None:
    train_x, train_y, test_x, test_y = random_idx_arrays(5, 3)
    write_idx_set(tmp_path, train_x, train_y, test_x, test_y, gz=gz)

    ds = load_dataset(name, tmp_path)

    assert ds.name == name
    assert ds.train_images.shape == (5, 28, 28, 1)
    assert ds.test_images.shape == (3, 28, 28, 1)
    assert ds.train_images.dtype == np.uint8
    assert ds.train_labels.dtype == np.int64
    np.testing.assert_array_equal(ds.train_images[..., 0], train_x)
    np.testing.assert_array_equal(ds.test_images[..., 0], test_x)
    np.testing.assert_array_equal(ds.train_labels, [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(ds.test_labels, [7, 8, 9])
    assert (ds.color, ds.image_size, ds.channels) == ("L", (28, 28), 1)
    assert ds.train_images.flags.writeable  # torch.from_numpy warns on read-only arrays


def test_label_names_per_dataset(tmp_path: Path) -> None:
    write_idx_set(tmp_path, *random_idx_arrays())
    assert load_dataset("mnist", tmp_path).labels == tuple("0123456789")
    fashion = load_dataset("fashion-mnist", tmp_path)
    assert fashion.labels == FASHION_MNIST_LABELS
    assert fashion.labels[0] == "T-shirt/top"
    assert fashion.labels[9] == "Ankle boot"


@pytest.mark.parametrize("sub", ["mnist", "mnist/raw"])
def test_finds_files_in_subfolders(tmp_path: Path, sub: str) -> None:
    train_x, train_y, test_x, test_y = random_idx_arrays(4, 2, seed=3)
    write_idx_set(tmp_path / sub, train_x, train_y, test_x, test_y, gz=True)

    ds = load_dataset("mnist", tmp_path)

    np.testing.assert_array_equal(ds.train_images[..., 0], train_x)
    assert str(tmp_path / sub) in ds.source


def test_own_subfolder_wins_over_loose_files(tmp_path: Path) -> None:
    # MNIST and Fashion-MNIST share file names: loose files in data_dir must not shadow the
    # data set's own folder.
    write_idx_set(tmp_path, *random_idx_arrays(5, 3, seed=1))
    fashion = random_idx_arrays(6, 2, seed=2)
    write_idx_set(tmp_path / "fashion-mnist", *fashion)

    ds = load_dataset("fashion-mnist", tmp_path)

    assert len(ds.train_labels) == 6
    np.testing.assert_array_equal(ds.train_images[..., 0], fashion[0])


def test_raw_and_gz_mixed_in_one_folder(tmp_path: Path) -> None:
    paths = write_idx_set(tmp_path, *random_idx_arrays(), gz=False)
    label_path = paths[TRAIN_LABELS]
    label_path.with_name(label_path.name + ".gz").write_bytes(
        gzip.compress(label_path.read_bytes())
    )
    label_path.unlink()

    ds = load_dataset("mnist", tmp_path)

    np.testing.assert_array_equal(ds.train_labels, [0, 1, 2, 3, 4])


def test_bad_magic(tmp_path: Path) -> None:
    paths = write_idx_set(tmp_path, *random_idx_arrays())
    data = bytearray(paths[TRAIN_IMAGES].read_bytes())
    data[0:4] = struct.pack(">I", 0x12345678)
    paths[TRAIN_IMAGES].write_bytes(bytes(data))

    with pytest.raises(DatasetError) as err:
        load_dataset("mnist", tmp_path)

    message = str(err.value)
    assert "bad magic number 0x12345678" in message
    assert "expected 0x00000803" in message
    assert "not an IDX image file" in message
    assert TRAIN_IMAGES in message


def test_label_file_in_place_of_images_is_named(tmp_path: Path) -> None:
    paths = write_idx_set(tmp_path, *random_idx_arrays())
    paths[TRAIN_IMAGES].write_bytes(paths[TRAIN_LABELS].read_bytes())

    with pytest.raises(DatasetError, match="bad magic number 0x00000801"):
        load_dataset("mnist", tmp_path)


def test_truncated_payload(tmp_path: Path) -> None:
    paths = write_idx_set(tmp_path, *random_idx_arrays(5, 3))
    data = paths[TRAIN_IMAGES].read_bytes()
    paths[TRAIN_IMAGES].write_bytes(data[:-10])

    with pytest.raises(DatasetError) as err:
        load_dataset("mnist", tmp_path)

    message = str(err.value)
    assert "truncated" in message
    assert f"expected {5 * 28 * 28} payload bytes" in message
    assert f"found {5 * 28 * 28 - 10}" in message


def test_too_long_payload(tmp_path: Path) -> None:
    paths = write_idx_set(tmp_path, *random_idx_arrays(5, 3))
    paths[TEST_LABELS].write_bytes(paths[TEST_LABELS].read_bytes() + b"\x00\x01")

    with pytest.raises(DatasetError, match=r"too long.*expected 3 payload bytes, found 5"):
        load_dataset("mnist", tmp_path)


def test_truncated_header(tmp_path: Path) -> None:
    paths = write_idx_set(tmp_path, *random_idx_arrays())
    paths[TRAIN_IMAGES].write_bytes(struct.pack(">II", 0x803, 5))

    with pytest.raises(DatasetError, match="truncated header"):
        load_dataset("mnist", tmp_path)


def test_image_label_count_mismatch(tmp_path: Path) -> None:
    train_x, train_y, test_x, test_y = random_idx_arrays(5, 3)
    write_idx_set(tmp_path, train_x, train_y[:4], test_x, test_y)

    with pytest.raises(DatasetError) as err:
        load_dataset("mnist", tmp_path)

    message = str(err.value)
    assert "5 images" in message
    assert "4 labels" in message
    assert TRAIN_LABELS in message


def test_label_out_of_range(tmp_path: Path) -> None:
    train_x, train_y, test_x, test_y = random_idx_arrays(5, 3)
    train_y[2] = 10
    write_idx_set(tmp_path, train_x, train_y, test_x, test_y)

    with pytest.raises(DatasetError, match=r"label 10 at index 2 is out of range 0\.\.9"):
        load_dataset("mnist", tmp_path)


def test_wrong_image_size(tmp_path: Path) -> None:
    write_idx_set(tmp_path, *random_idx_arrays(size=32))

    with pytest.raises(DatasetError, match="32x32 images, expected 28x28"):
        load_dataset("mnist", tmp_path)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: data[: len(data) // 2], id="truncated-gzip"),
        pytest.param(lambda data: b"\x1f\x8b" + b"\xff" * 40, id="garbage-after-signature"),
        pytest.param(lambda data: b"this is not gzip at all", id="not-gzip"),
        pytest.param(
            lambda data: data[:20] + bytes(b ^ 0xFF for b in data[20:40]) + data[40:],
            id="flipped-deflate-bytes",
        ),
    ],
)
def test_corrupt_gzip(tmp_path: Path, damage: Callable[[bytes], bytes]) -> None:
    paths = write_idx_set(tmp_path, *random_idx_arrays(), gz=True)
    path = paths[TRAIN_IMAGES]
    path.write_bytes(damage(path.read_bytes()))

    with pytest.raises(DatasetError) as err:
        load_dataset("mnist", tmp_path)

    message = str(err.value)
    assert str(path) in message
    assert "gzip" in message or "IDX" in message


def test_still_compressed_payload_gives_hint(tmp_path: Path) -> None:
    paths = write_idx_set(tmp_path, *random_idx_arrays(), gz=False)
    path = paths[TRAIN_IMAGES]
    gz_named = path.with_name(path.name + ".gz")
    gz_named.write_bytes(gzip.compress(gzip.compress(path.read_bytes())))  # double-compressed
    path.unlink()

    with pytest.raises(DatasetError, match="gzip-compressed"):
        load_dataset("mnist", tmp_path)


def test_missing_files_names_them_and_the_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as err:
        load_dataset("mnist", tmp_path)

    message = str(err.value)
    assert message.startswith(f"mnist: files not found in {tmp_path}")
    for base in IDX_FILES:
        assert f"{base}[.gz]" in message
    assert "--download" in message


def test_incomplete_folder_counts_as_missing(tmp_path: Path) -> None:
    paths = write_idx_set(tmp_path, *random_idx_arrays())
    paths[TEST_LABELS].unlink()

    with pytest.raises(DatasetError, match="files not found"):
        load_dataset("fashion-mnist", tmp_path)


def test_reader_shape_for_non_square_images(tmp_path: Path) -> None:
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "images"
    path.write_bytes(idx_bytes(images))

    out = read_idx_images(path)

    assert out.shape == (2, 3, 4, 1)
    np.testing.assert_array_equal(out[..., 0], images)
