"""The in-memory form every reader returns, and the one error type they raise."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray


class DatasetError(Exception):
    """A data set is missing, corrupt or cannot be fetched; the message says what to do."""


# eq=False: the generated __eq__/__hash__ would compare/hash the arrays, which numpy forbids.
@dataclass(frozen=True, eq=False)
class ImageDataset:
    """A labelled image data set with a fixed train/test split.

    Images are (N, H, W, C) uint8 with C = 1 (grey) or 3 (RGB); labels are (N,) int64 indices
    into `labels`, the class names.
    """

    name: str
    train_images: NDArray[np.uint8]
    train_labels: NDArray[np.int64]
    test_images: NDArray[np.uint8]
    test_labels: NDArray[np.int64]
    labels: tuple[str, ...]
    source: str

    def __post_init__(self) -> None:
        if not self.labels:
            raise DatasetError(f"{self.name}: no class names given")
        for split in ("train", "test"):
            images = getattr(self, f"{split}_images")
            targets = getattr(self, f"{split}_labels")
            _check_images(self.name, split, images)
            _check_labels(self.name, split, targets, len(self.labels))
            if images.shape[0] != targets.shape[0]:
                raise DatasetError(
                    f"{self.name}: {split} split has {images.shape[0]} images "
                    f"but {targets.shape[0]} labels"
                )
        if self.train_images.shape[1:] != self.test_images.shape[1:]:
            raise DatasetError(
                f"{self.name}: train images are {self.train_images.shape[1:]} (H, W, C) "
                f"but test images are {self.test_images.shape[1:]}"
            )

    @property
    def color(self) -> Literal["L", "RGB"]:
        """PIL-style mode: "L" for one channel, "RGB" for three."""
        return "L" if self.channels == 1 else "RGB"

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return int(self.train_images.shape[1]), int(self.train_images.shape[2])

    @property
    def channels(self) -> int:
        return int(self.train_images.shape[3])

    @property
    def num_classes(self) -> int:
        return len(self.labels)


def _check_images(name: str, split: str, images: object) -> None:
    if not isinstance(images, np.ndarray):
        raise DatasetError(f"{name}: {split} images must be a numpy array, got {type(images)}")
    if images.dtype != np.uint8:
        raise DatasetError(f"{name}: {split} images must be uint8, got {images.dtype}")
    if images.ndim != 4 or images.shape[3] not in (1, 3):
        raise DatasetError(
            f"{name}: {split} images must have shape (N, H, W, C) with C = 1 or 3, "
            f"got {images.shape}"
        )
    if images.shape[0] == 0 or images.shape[1] == 0 or images.shape[2] == 0:
        raise DatasetError(f"{name}: {split} split is empty (images shape {images.shape})")


def _check_labels(name: str, split: str, targets: object, num_classes: int) -> None:
    if not isinstance(targets, np.ndarray):
        raise DatasetError(f"{name}: {split} labels must be a numpy array, got {type(targets)}")
    if targets.dtype != np.int64:
        raise DatasetError(f"{name}: {split} labels must be int64, got {targets.dtype}")
    if targets.ndim != 1:
        raise DatasetError(f"{name}: {split} labels must have shape (N,), got {targets.shape}")
    if targets.size and (targets.min() < 0 or targets.max() >= num_classes):
        raise DatasetError(
            f"{name}: {split} labels must lie in 0..{num_classes - 1} "
            f"({num_classes} classes), found {targets.min()}..{targets.max()}"
        )
