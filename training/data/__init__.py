"""Image data sets for training: one loader per name, all returning an ImageDataset.

Imports only numpy, the standard library and tqdm (scikit-learn lazily, for digits); never
torch, so data can be inspected and tested without it.
"""

from __future__ import annotations

from pathlib import Path

from training.data.base import DatasetError, ImageDataset

DATASETS: tuple[str, ...] = ("digits", "mnist", "fashion-mnist", "cifar10")

# Where MNIST, Fashion-MNIST and CIFAR-10 are looked for (and downloaded to) when no data_dir
# is given; relative to the working directory, and ignored by git.
DEFAULT_DATA_DIR = Path("data")


def load_dataset(
    name: str,
    data_dir: Path | None = None,
    *,
    download: bool = False,
    mirror: str | None = None,
) -> ImageDataset:
    """Load data set `name` from `data_dir` (default ./data; digits needs no files).

    With `download=True`, files missing from `data_dir` are fetched first (from `mirror`,
    a base URL, instead of the official location when given). Raises DatasetError with a
    message that says what is wrong and what to do.
    """
    # Imported here so that importing the registry stays cheap.
    from training.data import cifar, idx
    from training.data.digits import load_digits
    from training.data.download import download_cifar10, download_idx

    if name == "digits":
        return load_digits()
    root = Path(data_dir) if data_dir is not None else DEFAULT_DATA_DIR
    if name in idx.IDX_DATASETS:
        if download and idx.locate_idx_files(name, root) is None:
            # Into the data set's own subfolder: MNIST and Fashion-MNIST share file names.
            download_idx(name, root / name, mirror=mirror)
        return idx.load_idx(name, root)
    if name == "cifar10":
        if download and cifar.locate_cifar_dir(root) is None:
            download_cifar10(root, mirror=mirror)
        return cifar.load_cifar10(root)
    raise DatasetError(f"unknown data set {name!r}; known data sets: {', '.join(DATASETS)}")


__all__ = ["DATASETS", "DEFAULT_DATA_DIR", "DatasetError", "ImageDataset", "load_dataset"]
