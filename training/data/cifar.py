"""CIFAR-10, python version: pickled batches read through a restricted unpickler.

The official files are pickles, and a plain `pickle.load` runs whatever a file asks for. A
data folder is untrusted input, so only the few globals that a genuine batch needs (numpy's
array reconstruction) are allowed; any other global is refused before it can be called.
"""

from __future__ import annotations

import importlib
import pickle
import warnings
from pathlib import Path
from typing import IO, Any

import numpy as np
from numpy.typing import NDArray

from training.data.base import DatasetError, ImageDataset

CIFAR_FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES: tuple[str, ...] = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META_FILE = "batches.meta"
BATCH_FILES: tuple[str, ...] = (*TRAIN_BATCHES, TEST_BATCH)

CIFAR10_LABELS: tuple[str, ...] = (
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
)
ROW_LENGTH = 3 * 32 * 32  # channel-major: 1024 red, then 1024 green, then 1024 blue

# (module, name) pairs a CIFAR batch may reference. The real files were written by Python 2
# with numpy 1.x (numpy.core...); numpy 2 writes numpy._core...; protocol 5 pickles use
# _frombuffer; Python 3 protocol-2 pickles spell bytes as _codecs.encode(str, "latin1").
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }
)


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only ALLOWED_GLOBALS and refuses everything else."""

    def __init__(self, file: IO[bytes], *, source: Path) -> None:
        super().__init__(file, encoding="bytes")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise DatasetError(
                f"{self._source}: refuses to load pickle global {module}.{name}: a CIFAR-10 "
                "batch holds only numpy arrays, lists and bytes, so this file is not a genuine "
                "batch (it may be malicious); delete it and get the official files"
            )
        return _resolve(module, name)


def _resolve(module: str, name: str) -> Any:
    # numpy 2 renamed numpy.core to numpy._core (the old name still works but warns); try the
    # name this numpy actually has first, so both old and new pickles load quietly.
    candidates = [module]
    if module.startswith("numpy.core."):
        candidates.insert(0, "numpy._core." + module.removeprefix("numpy.core."))
    elif module.startswith("numpy._core."):
        candidates.append("numpy.core." + module.removeprefix("numpy._core."))
    for candidate in candidates:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                return getattr(importlib.import_module(candidate), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"this numpy has no {module}.{name}")


def restricted_load(path: Path) -> object:
    """Unpickle `path` with RestrictedUnpickler; any failure becomes a DatasetError."""
    try:
        with path.open("rb") as f:
            return RestrictedUnpickler(f, source=path).load()
    except DatasetError:
        raise
    except Exception as exc:
        # Garbage input can make unpickling fail in many ways (UnpicklingError, EOFError,
        # ValueError, TypeError, ...); to the user they all mean "this file is damaged".
        raise DatasetError(
            f"{path}: corrupt or truncated pickle ({type(exc).__name__}: {exc}); "
            "delete it and extract the official cifar-10-python.tar.gz again"
        ) from exc


def candidate_dirs(data_dir: Path) -> list[Path]:
    """`data_dir/cifar-10-batches-py` (what the archive extracts to), then `data_dir`."""
    return [data_dir / CIFAR_FOLDER, data_dir]


def locate_cifar_dir(data_dir: Path) -> Path | None:
    """The first candidate folder that holds all six batch files, else None."""
    for folder in candidate_dirs(data_dir):
        if all((folder / batch).is_file() for batch in BATCH_FILES):
            return folder
    return None


def missing_files_message(data_dir: Path) -> str:
    return (
        f"cifar10: files not found in {data_dir / CIFAR_FOLDER} or {data_dir}: "
        f"{', '.join(BATCH_FILES)} (and {META_FILE}); extract the python version "
        f"cifar-10-python.tar.gz into {data_dir} or pass --download"
    )


def load_cifar10(data_dir: Path) -> ImageDataset:
    """Read CIFAR-10: data_batch_1..5 for training, test_batch for testing."""
    folder = locate_cifar_dir(data_dir)
    if folder is None:
        raise DatasetError(missing_files_message(data_dir))

    meta_path = folder / META_FILE
    classes = read_meta(meta_path) if meta_path.is_file() else CIFAR10_LABELS

    train = [read_batch(folder / batch, num_classes=len(classes)) for batch in TRAIN_BATCHES]
    test_images, test_labels = read_batch(folder / TEST_BATCH, num_classes=len(classes))
    return ImageDataset(
        name="cifar10",
        train_images=np.concatenate([images for images, _ in train]),
        train_labels=np.concatenate([targets for _, targets in train]),
        test_images=test_images,
        test_labels=test_labels,
        labels=classes,
        source=f"CIFAR-10 python batches in {folder} (official test_batch split)",
    )


def read_batch(
    path: Path, *, num_classes: int = len(CIFAR10_LABELS)
) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """One batch file as ((N, 32, 32, 3) uint8 images, (N,) int64 labels)."""
    batch = restricted_load(path)
    if not isinstance(batch, dict):
        raise DatasetError(
            f"{path}: expected a pickled dict with 'data' and 'labels', "
            f"got {type(batch).__name__}; not a CIFAR-10 python batch"
        )
    data = _get(batch, "data", path)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        shape = getattr(data, "shape", None)
        dtype = getattr(data, "dtype", type(data).__name__)
        raise DatasetError(
            f"{path}: 'data' must be a 2-D uint8 array (N, {ROW_LENGTH}), "
            f"got {dtype} with shape {shape}; not a CIFAR-10 python batch"
        )
    if data.shape[1] != ROW_LENGTH:
        raise DatasetError(
            f"{path}: rows have {data.shape[1]} values, expected {ROW_LENGTH} "
            "(3 x 32 x 32, channel-major); not a CIFAR-10 batch (CIFAR-100 or a damaged file?)"
        )
    try:
        targets = np.asarray(_get(batch, "labels", path), dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise DatasetError(f"{path}: 'labels' is not a list of integers ({exc})") from exc
    if targets.ndim != 1 or targets.shape[0] != data.shape[0]:
        raise DatasetError(
            f"{path}: {data.shape[0]} images but labels of shape {targets.shape}; "
            "the batch is damaged, replace it"
        )
    if targets.size and (int(targets.min()) < 0 or int(targets.max()) >= num_classes):
        raise DatasetError(
            f"{path}: labels must lie in 0..{num_classes - 1}, found "
            f"{int(targets.min())}..{int(targets.max())}; the batch is damaged, replace it"
        )
    # Each row is the red plane, then green, then blue; move channels last (N, H, W, C).
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), targets


def read_meta(path: Path) -> tuple[str, ...]:
    """The class names from batches.meta (`label_names`, a list of bytes)."""
    meta = restricted_load(path)
    if not isinstance(meta, dict):
        raise DatasetError(f"{path}: expected a pickled dict, got {type(meta).__name__}")
    raw = _get(meta, "label_names", path)
    if not isinstance(raw, list) or not all(isinstance(n, bytes | str) for n in raw):
        raise DatasetError(f"{path}: 'label_names' must be a list of strings")
    names = tuple(n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in raw)
    if len(names) != len(CIFAR10_LABELS):
        raise DatasetError(
            f"{path}: {len(names)} class names, expected {len(CIFAR10_LABELS)}; "
            "not the CIFAR-10 batches.meta (delete it to use the standard names)"
        )
    return names


def _get(mapping: dict[Any, Any], key: str, path: Path) -> Any:
    # The real files were pickled by Python 2, so with encoding="bytes" their keys are bytes;
    # accept str keys too, for batches re-pickled by Python 3 code.
    for candidate in (key.encode(), key):
        if candidate in mapping:
            return mapping[candidate]
    raise DatasetError(f"{path}: no '{key}' entry; not a CIFAR-10 python batch")
