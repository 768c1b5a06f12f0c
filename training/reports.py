"""PNG reports written at the end of a training run.

Only numpy, matplotlib and the stdlib are used: the trainer converts tensors to numpy arrays first,
so this module can be imported (and tested) without torch.

Figures are built with ``matplotlib.figure.Figure`` and rendered by the Agg backend directly rather
than through ``pyplot``: pyplot keeps every figure in a global registry until it is closed and may
try to pick an interactive backend, neither of which we want in a headless training job.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from numpy.typing import NDArray

__all__ = ["plot_confusion_matrix", "plot_curves", "plot_filters", "plot_misclassified"]

DPI = 120
# Beyond this many epochs per-point markers clutter the lines more than they help.
_MARKER_EPOCH_LIMIT = 30
_MAX_FILTERS = 64
# Up to this many epochs every epoch gets its own x tick.
_EXPLICIT_TICK_LIMIT = 15


@contextmanager
def _figure(path: Path, figsize: tuple[float, float], *, tight: bool = True) -> Iterator[Figure]:
    """Yield a constrained-layout figure, then save it to ``path`` and release it."""
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)  # attaches itself to ``fig``; no pyplot, no global figure registry
    try:
        yield fig
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # bbox_inches="tight" is a safety net on top of constrained layout: with fixed-aspect image
        # axes, constrained layout can leave an outer axis label partly outside the canvas.
        extra: dict[str, Any] = {"bbox_inches": "tight", "pad_inches": 0.1} if tight else {}
        fig.savefig(path, dpi=DPI, facecolor="white", **extra)
    finally:
        # Drop the artists eagerly so a long run that writes many reports does not hold on to them.
        fig.clear()


def _label(labels: Sequence[str], index: int) -> str:
    """Class name for ``index``, or the bare index if the label list is too short."""
    return labels[index] if 0 <= index < len(labels) else str(index)


def _format_accuracy(value: float) -> str:
    """Accuracies are fractions in [0, 1]; show them as percentages (pass through anything else)."""
    return f"{100.0 * value:.2f}%" if 0.0 <= value <= 1.0 else f"{value:.4g}"


def _grid(count: int, max_cols: int) -> tuple[int, int]:
    """Rows and columns for ``count`` tiles: near-square, preferring a width with no empty slots.

    E.g. 32 filters -> 4x8 rather than 6x6 with four blanks; falls back to ceil(sqrt(count)) wide.
    """
    square = max(1, math.ceil(math.sqrt(count)))
    cols = min(square, max_cols)
    for candidate in range(square, min(max_cols, 2 * square) + 1):
        if count % candidate == 0:
            cols = candidate
            break
    return math.ceil(count / cols), cols


def _hide_ticks(ax: Axes) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


# --------------------------------------------------------------------------------------------------
# Learning curves
# --------------------------------------------------------------------------------------------------


def plot_curves(history: Sequence[Mapping[str, float]], path: Path) -> None:
    """Loss and accuracy per epoch (train vs test), side by side."""
    if len(history) == 0:
        raise ValueError("plot_curves: history is empty; expected one dict per epoch")
    required = ("epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy")
    missing = [key for key in required if key not in history[0]]
    if missing:
        raise ValueError(f"plot_curves: history entries lack keys {missing}")

    epochs = [float(h["epoch"]) for h in history]
    # Markers make a 1-epoch run visible at all; with many epochs they only add noise.
    style: dict[str, Any] = {"marker": "o", "markersize": 4 if len(history) <= 10 else 2.5}
    if len(history) > _MARKER_EPOCH_LIMIT:
        style = {"marker": None}

    final = history[-1]
    with _figure(path, figsize=(11.0, 4.2)) as fig:
        ax_loss, ax_acc = fig.subplots(1, 2)
        for ax, metric, ylabel in (
            (ax_loss, "loss", "loss"),
            (ax_acc, "accuracy", "accuracy"),
        ):
            ax.plot(epochs, [h[f"train_{metric}"] for h in history], label="train", **style)
            ax.plot(epochs, [h[f"test_{metric}"] for h in history], label="test", **style)
            ax.set_xlabel("epoch")
            ax.set_ylabel(ylabel)
            ax.set_title(ylabel)
            if len(epochs) <= _EXPLICIT_TICK_LIMIT:
                # A short run: tick every epoch and leave half an epoch either side, otherwise a
                # single epoch gets an axis like 0.95 ... 1.05.
                ax.set_xticks(epochs)
                ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
            else:
                # Epochs are whole numbers; keep the automatic ticks off fractional positions.
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            ax.legend()
        fig.suptitle(
            f"final test accuracy {_format_accuracy(float(final['test_accuracy']))} "
            f"(epoch {int(final['epoch'])})"
        )


# --------------------------------------------------------------------------------------------------
# Confusion matrix
# --------------------------------------------------------------------------------------------------


def plot_confusion_matrix(matrix: NDArray[np.int64], labels: Sequence[str], path: Path) -> None:
    """Heat map of ``matrix[true, pred]`` with the count written in every cell."""
    counts = np.asarray(matrix)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"plot_confusion_matrix: expected a square matrix, got {counts.shape}")
    n = counts.shape[0]
    if len(labels) != n:
        raise ValueError(f"plot_confusion_matrix: {len(labels)} labels for a {n}x{n} matrix")

    total = int(counts.sum())
    correct = int(np.trace(counts))
    accuracy = f"{100.0 * correct / total:.2f}% ({correct}/{total})" if total else "n/a (empty)"

    side = max(5.0, 0.65 * n + 2.5)
    # Shrink the in-cell font as classes or digits grow so numbers stay inside their cells.
    digits = len(str(int(counts.max()))) if counts.size else 1
    cell_font = max(5.0, min(11.0, 110.0 / max(n, 1), 38.0 / digits))

    with _figure(path, figsize=(side + 1.0, side)) as fig:
        ax = fig.add_subplot()
        # aspect="auto": the near-square figure keeps cells near-square anyway, and a fixed-aspect
        # axes makes constrained layout misplace the "true" label.
        image = ax.imshow(counts, cmap="Blues", interpolation="nearest", vmin=0, aspect="auto")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="count")
        for t in range(n):
            for p in range(n):
                value = counts[t, p]
                # Pick the text colour from the cell's actual luminance rather than a fixed count
                # threshold, so it stays readable whatever the colormap and scale.
                r, g, b, _ = image.cmap(image.norm(value))
                luminance = 0.299 * r + 0.587 * g + 0.114 * b
                ax.text(
                    p,
                    t,
                    str(int(value)),
                    ha="center",
                    va="center",
                    fontsize=cell_font,
                    color="black" if luminance > 0.5 else "white",
                )
        ax.set_xticks(range(n), labels=list(labels))
        ax.set_yticks(range(n), labels=list(labels))
        if max((len(label) for label in labels), default=0) > 3:
            ax.tick_params(axis="x", labelrotation=45)
            for tick in ax.get_xticklabels():
                tick.set_horizontalalignment("right")
                tick.set_rotation_mode("anchor")
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"confusion matrix: accuracy {accuracy}")


# --------------------------------------------------------------------------------------------------
# Misclassified examples
# --------------------------------------------------------------------------------------------------


def plot_misclassified(
    images: NDArray[np.uint8],
    true: NDArray[np.int64],
    pred: NDArray[np.int64],
    labels: Sequence[str],
    path: Path,
    *,
    max_images: int = 36,
) -> None:
    """Grid of (up to ``max_images``) misclassified images titled with true and predicted class."""
    pixels = np.asarray(images)
    if pixels.ndim == 3:  # tolerate (N, H, W) grey images without a channel axis
        pixels = pixels[..., np.newaxis]
    if pixels.ndim != 4 or pixels.shape[-1] not in (1, 3):
        raise ValueError(
            f"plot_misclassified: expected images of shape (N, H, W, 1|3), got {pixels.shape}"
        )
    true_idx = np.asarray(true).reshape(-1)
    pred_idx = np.asarray(pred).reshape(-1)
    if not len(pixels) == len(true_idx) == len(pred_idx):
        raise ValueError(
            f"plot_misclassified: {len(pixels)} images but {len(true_idx)} true / "
            f"{len(pred_idx)} predicted labels"
        )

    total = len(pixels)
    shown = min(total, max(0, max_images))
    if shown == 0:
        # tight=False: a tight bounding box would crop the canvas down to the sentence itself.
        with _figure(path, figsize=(5.0, 2.0), tight=False) as fig:
            fig.text(0.5, 0.5, "no misclassified test images", ha="center", va="center", size=14)
        return

    rows, cols = _grid(shown, max_cols=8)
    # ~1.4 in per tile keeps 8x8 and 28x28 images big enough to see; extra height is for titles.
    tile = 1.4
    with _figure(path, figsize=(cols * tile + 0.4, rows * (tile + 0.45) + 0.5)) as fig:
        axes = fig.subplots(rows, cols, squeeze=False)
        for k, ax in enumerate(axes.flat):
            _hide_ticks(ax)
            if k >= shown:
                ax.set_axis_off()
                continue
            img = pixels[k]
            if img.shape[-1] == 1:
                ax.imshow(img[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            else:
                ax.imshow(img, interpolation="nearest")
            true_name = _label(labels, int(true_idx[k]))
            pred_name = _label(labels, int(pred_idx[k]))
            ax.set_title(f"true: {true_name}\npred: {pred_name}", fontsize=7)
        fig.suptitle(f"misclassified test images ({shown} of {total} shown)")


# --------------------------------------------------------------------------------------------------
# Learned weights
# --------------------------------------------------------------------------------------------------


def _symmetric_limit(values: NDArray[np.floating]) -> float:
    """Largest finite absolute value, so a diverging colormap is centred on zero."""
    finite = np.abs(values[np.isfinite(values)])
    limit = float(finite.max()) if finite.size else 0.0
    return limit if limit > 0.0 else 1.0  # all-zero weights: any non-degenerate range will do


def _plot_conv_filters(weights: NDArray[np.floating], path: Path, title: str) -> None:
    out_ch, in_ch, kh, kw = weights.shape
    shown = min(out_ch, _MAX_FILTERS)
    filters = weights[:shown].astype(np.float64)
    rows, cols = _grid(shown, max_cols=8)
    rgb = in_ch == 3

    if rgb:
        detail = f"{shown} of {out_ch} filters, {kh}x{kw}, RGB (each filter scaled to 0..1)"
    else:
        detail = f"{shown} of {out_ch} filters, {kh}x{kw}, mean over {in_ch} input channel(s)"

    tile = 0.9
    with _figure(path, figsize=(cols * tile + (0.3 if rgb else 1.2), rows * tile + 0.9)) as fig:
        axes = fig.subplots(rows, cols, squeeze=False)
        image = None
        if not rgb:
            tiles = filters.mean(axis=1)
            # One shared, zero-centred scale across tiles so their strengths are comparable.
            limit = _symmetric_limit(tiles)
        for k, ax in enumerate(axes.flat):
            _hide_ticks(ax)
            if k >= shown:
                ax.set_axis_off()
                continue
            if rgb:
                f = filters[k].transpose(1, 2, 0)  # (in, kh, kw) -> (kh, kw, rgb) for imshow
                lo, hi = float(f.min()), float(f.max())
                f = (f - lo) / (hi - lo) if hi > lo else np.full_like(f, 0.5)
                ax.imshow(f, interpolation="nearest")
            else:
                image = ax.imshow(
                    tiles[k], cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest"
                )
        if image is not None:
            fig.colorbar(image, ax=axes, shrink=0.6, label="weight")
        fig.suptitle(f"{title}\n{detail}", fontsize=11)


def _plot_weight_matrix(weights: NDArray[np.floating], path: Path, title: str) -> None:
    rows, cols = weights.shape
    values = weights.astype(np.float64)
    limit = _symmetric_limit(values)
    # Figure shape follows the matrix shape (clamped) so cells are not absurdly stretched.
    width = float(np.clip(2.0 + cols * 0.25, 5.0, 11.0))
    height = float(np.clip(2.0 + rows * 0.25, 4.0, 8.0))
    gates = rows % 4 == 0 and rows >= 4  # PyTorch stacks the LSTM gates as i, f, g, o row blocks

    with _figure(path, figsize=(width, height)) as fig:
        ax = fig.add_subplot()
        image = ax.imshow(
            values,
            cmap="RdBu_r",
            vmin=-limit,
            vmax=limit,
            interpolation="nearest",
            aspect="auto",  # e.g. 512x8: square cells would make a useless sliver
        )
        fig.colorbar(image, ax=ax, label="weight")
        ax.set_xlabel("input feature")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if gates:
            block = rows // 4
            for b in range(1, 4):
                ax.axhline(b * block - 0.5, color="black", linewidth=0.8, linestyle="--")
            # Row numbers at the block boundaries, gate names (minor ticks) at the block centres.
            ax.set_yticks([b * block for b in range(4)] + [rows - 1])
            ax.set_yticks(
                [b * block + (block - 1) / 2 for b in range(4)], labels=list("ifgo"), minor=True
            )
            ax.tick_params(axis="y", which="minor", length=0, labelsize=12)
            ax.set_ylabel("gate unit (i, f, g, o blocks)")
        else:
            ax.set_ylabel("output unit")
        ax.set_title(f"{title}\n{rows}x{cols}, colour scale ±{limit:.3g}", fontsize=11)


def plot_filters(weights: NDArray[np.floating], path: Path, *, title: str) -> None:
    """Conv filters (out, in, kh, kw) as a tile grid, or a 2-D weight matrix as a heat map."""
    values = np.asarray(weights)
    if values.size == 0:
        raise ValueError(f"plot_filters: weights are empty (shape {values.shape})")
    if values.ndim == 4:
        _plot_conv_filters(values, path, title)
    elif values.ndim == 2:
        _plot_weight_matrix(values, path, title)
    else:
        raise ValueError(
            "plot_filters: expected conv weights (out_ch, in_ch, kh, kw) or a 2-D weight matrix "
            f"(rows, cols), got an array of shape {values.shape}"
        )
