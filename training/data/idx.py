"""MNIST and Fashion-MNIST from their standard IDX files (raw or .gz).

IDX format: a big-endian uint32 magic number 0x000008NN (0x08 = unsigned bytes, NN = number
of dimensions), NN big-endian uint32 dimension sizes, then the payload, one byte per value.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from training.data.base import DatasetError, ImageDataset

IMAGE_MAGIC = 0x00000803  # ubyte, 3 dimensions: count, rows, cols
LABEL_MAGIC = 0x00000801  # ubyte, 1 dimension: count

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
IDX_FILES: tuple[str, ...] = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

IMAGE_SIZE = (28, 28)

MNIST_LABELS: tuple[str, ...] = tuple(str(i) for i in range(10))
FASHION_MNIST_LABELS: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
IDX_DATASETS: dict[str, tuple[str, ...]] = {
    "mnist": MNIST_LABELS,
    "fashion-mnist": FASHION_MNIST_LABELS,
}

_GZIP_SIGNATURE = b"\x1f\x8b"


def candidate_dirs(name: str, data_dir: Path) -> list[Path]:
    """Folders searched for the IDX files, most specific first.

    MNIST and Fashion-MNIST use the same file names, so a data set's own subfolder must win
    over loose files in `data_dir` (which may belong to the other data set).
    """
    return [data_dir / name, data_dir / name / "raw", data_dir]


def find_in_folder(folder: Path, basename: str) -> Path | None:
    """`folder/basename` or `folder/basename.gz`, raw preferred (no decompression needed)."""
    for candidate in (folder / basename, folder / f"{basename}.gz"):
        if candidate.is_file():
            return candidate
    return None


def missing_in_folder(folder: Path) -> list[str]:
    """The IDX base names that `folder` has in neither raw nor .gz form."""
    return [base for base in IDX_FILES if find_in_folder(folder, base) is None]


def locate_idx_files(name: str, data_dir: Path) -> dict[str, Path] | None:
    """The four files from the first candidate folder that holds all of them, else None.

    Files are never mixed across folders: a train file from one copy and a test file from
    another would make a silently inconsistent data set.
    """
    for folder in candidate_dirs(name, data_dir):
        found = {base: find_in_folder(folder, base) for base in IDX_FILES}
        if all(path is not None for path in found.values()):
            return {base: path for base, path in found.items() if path is not None}
    return None


def missing_files_message(name: str, data_dir: Path) -> str:
    names = ", ".join(f"{base}[.gz]" for base in IDX_FILES)
    subdirs = ", ".join(str(d) for d in candidate_dirs(name, data_dir)[:2])
    return (
        f"{name}: files not found in {data_dir}: {names} (also looked in {subdirs}); "
        "put the standard IDX files there or pass --download"
    )


def load_idx(name: str, data_dir: Path) -> ImageDataset:
    """Read MNIST or Fashion-MNIST; the test split is the official t10k files."""
    if name not in IDX_DATASETS:
        raise DatasetError(f"{name}: not an IDX data set (known: {', '.join(IDX_DATASETS)})")
    files = locate_idx_files(name, data_dir)
    if files is None:
        raise DatasetError(missing_files_message(name, data_dir))

    classes = IDX_DATASETS[name]
    splits: dict[str, tuple[NDArray[np.uint8], NDArray[np.int64]]] = {}
    for split, image_base, label_base in (
        ("train", TRAIN_IMAGES, TRAIN_LABELS),
        ("test", TEST_IMAGES, TEST_LABELS),
    ):
        image_path, label_path = files[image_base], files[label_base]
        images = read_idx_images(image_path)
        targets = read_idx_labels(label_path, num_classes=len(classes))
        if images.shape[0] != targets.shape[0]:
            raise DatasetError(
                f"{name}: {image_path} has {images.shape[0]} images but {label_path} has "
                f"{targets.shape[0]} labels; the files do not belong together, "
                "replace both with the standard ones"
            )
        if images.shape[1:3] != IMAGE_SIZE:
            raise DatasetError(
                f"{name}: {image_path} holds {images.shape[1]}x{images.shape[2]} images, "
                f"expected {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]}: not the standard {name} file"
            )
        splits[split] = (images, targets)

    return ImageDataset(
        name=name,
        train_images=splits["train"][0],
        train_labels=splits["train"][1],
        test_images=splits["test"][0],
        test_labels=splits["test"][1],
        labels=classes,
        source=f"{name} IDX files in {files[TRAIN_IMAGES].parent} (official t10k test split)",
    )


def read_idx_images(path: Path) -> NDArray[np.uint8]:
    """An IDX image file as (N, rows, cols, 1) uint8."""
    dims, payload = _parse_idx(path, IMAGE_MAGIC, "image")
    count, rows, cols = dims
    return payload.reshape(count, rows, cols, 1)


def read_idx_labels(path: Path, *, num_classes: int = 10) -> NDArray[np.int64]:
    """An IDX label file as (N,) int64, every label checked to be < num_classes."""
    _, payload = _parse_idx(path, LABEL_MAGIC, "label")
    targets = payload.astype(np.int64)
    if targets.size and int(targets.max()) >= num_classes:
        bad = int(np.argmax(targets >= num_classes))
        raise DatasetError(
            f"{path}: label {int(targets[bad])} at index {bad} is out of range "
            f"0..{num_classes - 1}; the file is corrupt or not a {num_classes}-class label file"
        )
    return targets


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read: {exc}") from exc
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise DatasetError(
            f"{path}: corrupt or truncated gzip file ({exc}); delete it and download it again "
            "(or replace it with the uncompressed file without .gz)"
        ) from exc


def _parse_idx(path: Path, magic: int, kind: str) -> tuple[tuple[int, ...], NDArray[np.uint8]]:
    """Check the header against `magic` and return (dims, flat writable uint8 payload)."""
    data = _read_bytes(path)
    ndim = magic & 0xFF
    header_len = 4 + 4 * ndim
    if len(data) < 4:
        raise DatasetError(
            f"{path}: only {len(data)} bytes, too short for an IDX {kind} file; "
            "the file is truncated, replace it"
        )
    (found,) = struct.unpack_from(">I", data, 0)
    if found != magic:
        hint = ""
        if data[:2] == _GZIP_SIGNATURE:
            hint = " (it is gzip-compressed: give it a .gz suffix)"
        elif found in (IMAGE_MAGIC, LABEL_MAGIC):
            hint = " (it looks like the other kind of IDX file: are the names swapped?)"
        raise DatasetError(
            f"{path}: bad magic number 0x{found:08x}, expected 0x{magic:08x}: "
            f"not an IDX {kind} file{hint}"
        )
    if len(data) < header_len:
        raise DatasetError(
            f"{path}: truncated header: expected {header_len} header bytes, found {len(data)}"
        )
    dims = struct.unpack_from(f">{ndim}I", data, 4)
    expected = math.prod(dims)
    found_len = len(data) - header_len
    if found_len != expected:
        problem = "truncated" if found_len < expected else "too long"
        shape = " x ".join(str(d) for d in dims)
        raise DatasetError(
            f"{path}: {problem}: header says {shape}, so expected {expected} payload bytes, "
            f"found {found_len}; the file is damaged, replace it"
        )
    # copy(): frombuffer over bytes is read-only, and torch.from_numpy warns on read-only arrays.
    payload = np.frombuffer(data, dtype=np.uint8, count=expected, offset=header_len).copy()
    return tuple(int(d) for d in dims), payload
