"""Builders for small, valid data files in the official formats (IDX, CIFAR-10 pickles)."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from training.data.idx import TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS

# ---------------------------------------------------------------------------------------------
# IDX (MNIST, Fashion-MNIST)


def idx_bytes(array: NDArray[np.uint8]) -> bytes:
    """`array` (any number of dimensions, uint8) in IDX format: magic, dims, payload."""
    if array.dtype != np.uint8:
        raise TypeError(f"IDX payloads here are uint8, got {array.dtype}")
    header = struct.pack(">I", 0x00000800 | array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array).tobytes()


def random_idx_arrays(
    n_train: int = 5, n_test: int = 3, *, seed: int = 0, size: int = 28
) -> tuple[NDArray[np.uint8], NDArray[np.uint8], NDArray[np.uint8], NDArray[np.uint8]]:
    """(train_images, train_labels, test_images, test_labels); images (N, size, size)."""
    rng = np.random.default_rng(seed)
    train_x = rng.integers(0, 256, size=(n_train, size, size), dtype=np.uint8)
    test_x = rng.integers(0, 256, size=(n_test, size, size), dtype=np.uint8)
    train_y = (np.arange(n_train) % 10).astype(np.uint8)
    test_y = ((np.arange(n_test) + 7) % 10).astype(np.uint8)
    return train_x, train_y, test_x, test_y


def write_idx_set(
    folder: Path,
    train_images: NDArray[np.uint8],
    train_labels: NDArray[np.uint8],
    test_images: NDArray[np.uint8],
    test_labels: NDArray[np.uint8],
    *,
    gz: bool = False,
) -> dict[str, Path]:
    """Write the four standard IDX files into `folder` (gzipped with `gz`); return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for base, array in (
        (TRAIN_IMAGES, train_images),
        (TRAIN_LABELS, train_labels),
        (TEST_IMAGES, test_images),
        (TEST_LABELS, test_labels),
    ):
        data = idx_bytes(array)
        path = folder / (f"{base}.gz" if gz else base)
        path.write_bytes(gzip.compress(data) if gz else data)
        paths[base] = path
    return paths


# ---------------------------------------------------------------------------------------------
# CIFAR-10 python batches

CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_NAMES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


def random_cifar_batch(
    n: int, *, seed: int, row_length: int = 3072
) -> tuple[NDArray[np.uint8], list[int]]:
    """(data (n, row_length) uint8, labels list of ints), like one real batch but small."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, row_length), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, size=n)]
    return data, labels


def py2_pickle(obj: object) -> bytes:
    """Pickle `obj` the way Python 2 + numpy 1.x wrote the real CIFAR files (protocol 2).

    Python 3 cannot write Python 2 `str` opcodes or the old `numpy.core` names, so this emits
    the opcodes by hand. Supports dict, list, bytes, int, bool, None and 2-D uint8 arrays.
    """
    return b"\x80\x02" + _py2(obj) + b"."


def _py2(obj: object) -> bytes:
    if obj is None:
        return b"N"
    if isinstance(obj, bool):
        return b"\x88" if obj else b"\x89"
    if isinstance(obj, int):
        return b"K" + bytes([obj]) if 0 <= obj < 256 else b"J" + struct.pack("<i", obj)
    if isinstance(obj, bytes):  # a Python 2 str
        if len(obj) < 256:
            return b"U" + bytes([len(obj)]) + obj
        return b"T" + struct.pack("<I", len(obj)) + obj
    if isinstance(obj, list):
        return b"](" + b"".join(_py2(item) for item in obj) + b"e"
    if isinstance(obj, dict):
        return b"}(" + b"".join(_py2(k) + _py2(v) for k, v in obj.items()) + b"u"
    if isinstance(obj, np.ndarray) and obj.dtype == np.uint8 and obj.ndim == 2:
        dtype = (
            b"cnumpy\ndtype\n" + _py2(b"u1") + b"K\x00K\x01\x87R"
            b"(K\x03" + _py2(b"|") + b"NNN" + _py2(-1) + _py2(-1) + b"K\x00tb"
        )
        shape = _py2(obj.shape[0]) + _py2(obj.shape[1]) + b"\x86"
        return (
            b"cnumpy.core.multiarray\n_reconstruct\n"
            b"cnumpy\nndarray\n" + b"K\x00\x85" + _py2(b"b") + b"\x87R"
            b"(K\x01" + shape + dtype + b"\x89" + _py2(obj.tobytes()) + b"tb"
        )
    raise TypeError(f"py2_pickle does not support {type(obj).__name__}")


def cifar_batch_bytes(
    data: NDArray[np.uint8], labels: list[int], *, protocol: int | str = "py2"
) -> bytes:
    """A batch dict with bytes keys, as in the real files; "py2" or a Python 3 protocol."""
    batch = {
        b"batch_label": b"testing batch",
        b"labels": labels,
        b"data": data,
        b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))],
    }
    if protocol == "py2":
        return py2_pickle(batch)
    return pickle.dumps(batch, protocol=int(protocol))


def meta_bytes(names: list[str], *, protocol: int | str = "py2") -> bytes:
    meta = {
        b"num_cases_per_batch": 10000,
        b"label_names": [n.encode() for n in names],
        b"num_vis": 3072,
    }
    if protocol == "py2":
        return py2_pickle(meta)
    return pickle.dumps(meta, protocol=int(protocol))


def write_cifar_set(
    folder: Path,
    train: list[tuple[NDArray[np.uint8], list[int]]],
    test: tuple[NDArray[np.uint8], list[int]],
    *,
    names: list[str] | None = None,
    protocol: int | str = "py2",
) -> None:
    """Write data_batch_1..5 (`train`, five batches), test_batch and, with `names`, the meta."""
    if len(train) != 5:
        raise ValueError("CIFAR-10 has five training batches")
    folder.mkdir(parents=True, exist_ok=True)
    for batch_name, (data, labels) in zip(CIFAR_TRAIN_BATCHES, train, strict=True):
        (folder / batch_name).write_bytes(cifar_batch_bytes(data, labels, protocol=protocol))
    (folder / "test_batch").write_bytes(cifar_batch_bytes(*test, protocol=protocol))
    if names is not None:
        (folder / "batches.meta").write_bytes(meta_bytes(names, protocol=protocol))


def small_cifar_set(
    folder: Path, *, per_batch: int = 4, n_test: int = 3, protocol: int | str = "py2"
) -> tuple[list[tuple[NDArray[np.uint8], list[int]]], tuple[NDArray[np.uint8], list[int]]]:
    """Write a small complete CIFAR-10 folder (with meta); return (train batches, test batch)."""
    train = [random_cifar_batch(per_batch, seed=i) for i in range(5)]
    test = random_cifar_batch(n_test, seed=99)
    write_cifar_set(folder, train, test, names=CIFAR_NAMES, protocol=protocol)
    return train, test


def cifar_tar_gz(source_dir: Path, archive: Path) -> None:
    """Pack `source_dir` as `cifar-10-batches-py/` into a .tar.gz, like the official archive."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(source_dir, arcname="cifar-10-batches-py")
    archive.write_bytes(buffer.getvalue())
