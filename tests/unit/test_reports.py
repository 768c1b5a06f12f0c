"""Unit tests for training.reports: every report writes a real, non-blank PNG."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training import reports
from training.data.cifar import CIFAR10_LABELS
from training.data.idx import FASHION_MNIST_LABELS

FASHION = list(FASHION_MNIST_LABELS)
CIFAR = list(CIFAR10_LABELS)


def _check_png(path: Path, min_side: int = 200) -> tuple[int, int]:
    """Assert ``path`` is a valid, reasonably sized PNG that is not one flat colour."""
    assert path.is_file(), f"{path} was not written"
    assert path.stat().st_size < 1_000_000, f"{path} is {path.stat().st_size} bytes"
    with Image.open(path) as img:
        img.verify()  # structural check; the image must be reopened to read pixels
    with Image.open(path) as img:
        assert img.format == "PNG"
        width, height = img.size
        pixels = np.asarray(img.convert("RGB"), dtype=np.float64)
    assert min_side <= width <= 3000, f"{path}: width {width}"
    assert min_side <= height <= 3000, f"{path}: height {height}"
    assert pixels.std() > 0, f"{path} is a single flat colour"
    return width, height


def _history(epochs: int) -> list[dict[str, float]]:
    return [
        {
            "epoch": e,
            "train_loss": 1.0 / e,
            "train_accuracy": 1.0 - 0.4 / e,
            "test_loss": 1.1 / e + 0.05,
            "test_accuracy": 1.0 - 0.45 / e,
        }
        for e in range(1, epochs + 1)
    ]


@pytest.mark.parametrize("epochs", [1, 3, 50])
def test_plot_curves(tmp_path: Path, epochs: int) -> None:
    path = tmp_path / "nested" / "curves.png"  # parent folder does not exist yet
    reports.plot_curves(_history(epochs), path)
    width, height = _check_png(path)
    assert width > height  # two panels side by side


def test_plot_curves_rejects_empty_history(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="empty"):
        reports.plot_curves([], tmp_path / "curves.png")


def test_plot_confusion_matrix(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    matrix = rng.integers(0, 40, size=(10, 10)).astype(np.int64)
    np.fill_diagonal(matrix, rng.integers(800, 990, size=10))
    path = tmp_path / "cm" / "confusion_matrix.png"
    reports.plot_confusion_matrix(matrix, FASHION, path)
    _check_png(path, min_side=500)


def test_plot_confusion_matrix_rejects_mismatched_labels(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="labels"):
        reports.plot_confusion_matrix(np.eye(3, dtype=np.int64), FASHION, tmp_path / "cm.png")


def test_plot_misclassified_grey(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(20, 28, 28, 1), dtype=np.uint8)
    true = rng.integers(0, 10, size=20).astype(np.int64)
    pred = (true + 1) % 10
    path = tmp_path / "misclassified.png"
    reports.plot_misclassified(images, true, pred, FASHION, path)
    _check_png(path, min_side=400)


def test_plot_misclassified_rgb(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, size=(5, 32, 32, 3), dtype=np.uint8)
    true = np.array([0, 1, 2, 3, 4], dtype=np.int64)
    pred = np.array([9, 8, 7, 6, 5], dtype=np.int64)
    path = tmp_path / "misclassified_rgb.png"
    reports.plot_misclassified(images, true, pred, CIFAR, path)
    _check_png(path)


def test_plot_misclassified_caps_at_max_images(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(100, 8, 8, 1), dtype=np.uint8)
    labels = rng.integers(0, 10, size=100).astype(np.int64)
    small, large = tmp_path / "small.png", tmp_path / "large.png"
    reports.plot_misclassified(images, labels, labels, FASHION, small, max_images=4)
    reports.plot_misclassified(images, labels, labels, FASHION, large)
    small_w, small_h = _check_png(small)
    large_w, large_h = _check_png(large)
    assert small_w * small_h < large_w * large_h


def test_plot_misclassified_none(tmp_path: Path) -> None:
    path = tmp_path / "none" / "misclassified.png"
    reports.plot_misclassified(
        np.zeros((0, 28, 28, 1), dtype=np.uint8),
        np.zeros(0, dtype=np.int64),
        np.zeros(0, dtype=np.int64),
        FASHION,
        path,
    )
    _check_png(path, min_side=100)  # the message is drawn, so the image is not blank


@pytest.mark.parametrize(
    ("shape", "name"),
    [((32, 1, 5, 5), "conv_grey"), ((32, 3, 3, 3), "conv_rgb"), ((512, 8), "lstm")],
)
def test_plot_filters(tmp_path: Path, shape: tuple[int, ...], name: str) -> None:
    weights = np.random.default_rng(4).normal(scale=0.1, size=shape).astype(np.float32)
    path = tmp_path / f"{name}.png"
    reports.plot_filters(weights, path, title=name)
    _check_png(path)


def test_plot_filters_caps_at_64_tiles(tmp_path: Path) -> None:
    weights = np.random.default_rng(5).normal(size=(128, 16, 3, 3))
    path = tmp_path / "many.png"
    reports.plot_filters(weights, path, title="conv2")
    _check_png(path)


@pytest.mark.parametrize("shape", [(8,), (4, 4, 4), (2, 2, 2, 2, 2), (0, 1, 3, 3)])
def test_plot_filters_rejects_bad_shapes(tmp_path: Path, shape: tuple[int, ...]) -> None:
    path = tmp_path / "bad.png"
    with pytest.raises(ValueError, match="plot_filters"):
        reports.plot_filters(np.zeros(shape, dtype=np.float32), path, title="bad")
    assert not path.exists()


def test_import_pulls_in_neither_torch_nor_pyplot() -> None:
    # The trainer relies on this module being torch-free, and pyplot would add global figure state.
    code = (
        "import sys, training.reports; "
        "print(sorted(m for m in ('torch', 'matplotlib.pyplot') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
