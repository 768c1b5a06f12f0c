"""Arrays -> the PNG pictures /explain answers with: the input as the model saw it, grids of
channel maps and filters, and the occlusion heat map over the input. Pure numpy and Pillow."""

from __future__ import annotations

import base64
import io
import math

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from modelrepo.manifest import ImagePreprocessing

# The line between the tiles of a grid, in pixels, and its grey level: mid-grey, so a tile's
# black and white edges both stay visible.
GRID_GAP = 1
GRID_GAP_LEVEL = 128


def scale_each(maps: NDArray[np.floating]) -> NDArray[np.uint8]:
    """(N, ...) maps -> uint8, each map stretched on its own to 0-255 (a flat map is 0): a
    channel's pattern is what matters, not how strong it is beside the others."""
    values = maps.astype(np.float64).reshape(len(maps), -1)
    low = values.min(axis=1, keepdims=True)
    span = values.max(axis=1, keepdims=True) - low
    scaled = np.where(span > 0, (values - low) / np.where(span > 0, span, 1) * 255, 0)
    return np.rint(scaled).astype(np.uint8).reshape(maps.shape)


def grid_shape(n: int) -> tuple[int, int]:
    """Rows and columns for n tiles: as square as can be, wider than tall."""
    cols = max(1, math.ceil(math.sqrt(n)))
    return math.ceil(n / cols), cols


def tile(tiles: NDArray[np.uint8], cols: int | None = None) -> NDArray[np.uint8]:
    """(N, h, w) or (N, h, w, 3) uint8 tiles -> one picture, row by row, GRID_GAP apart; the
    slots after the last tile stay gap-grey."""
    n, h, w = tiles.shape[:3]
    rows, cols = grid_shape(n) if cols is None else (math.ceil(n / cols), cols)
    out = np.full(
        (rows * h + (rows - 1) * GRID_GAP, cols * w + (cols - 1) * GRID_GAP, *tiles.shape[3:]),
        GRID_GAP_LEVEL,
        dtype=np.uint8,
    )
    for i in range(n):
        r, c = divmod(i, cols)
        y, x = r * (h + GRID_GAP), c * (w + GRID_GAP)
        out[y : y + h, x : x + w] = tiles[i]
    return out


def channel_grid(activations: NDArray[np.floating]) -> NDArray[np.uint8]:
    """One input's (C, H, W) activation maps -> a grid of C grey tiles, each scaled 0-255."""
    return tile(scale_each(activations))


def filter_grid(weights: NDArray[np.floating]) -> NDArray[np.uint8]:
    """(out, in, kh, kw) convolution weights -> a grid of `out` tiles, each scaled 0-255: grey
    for one input channel, colour for three (as the input's channels), else the first channel
    (as seed 000's filter_show shows them)."""
    channels = weights.shape[1]
    if channels == 3:
        return tile(scale_each(np.transpose(weights, (0, 2, 3, 1))))
    return tile(scale_each(weights[:, 0]))


def seen_input(x: NDArray[np.floating], spec: ImagePreprocessing) -> NDArray[np.uint8]:
    """The (C, H, W) tensor a model was fed, back in 0-255 pixels: the standardisation and
    scaling undone, nothing else (a canonicalised or inverted image stays so). (H, W) for one
    channel, (H, W, 3) for three."""
    mean = np.asarray(spec.mean, dtype=np.float64)[:, None, None]
    std = np.asarray(spec.std, dtype=np.float64)[:, None, None]
    pixels = np.clip(np.rint((x.astype(np.float64) * std + mean) / spec.scale), 0, 255)
    out = pixels.astype(np.uint8)
    return out[0] if len(out) == 1 else np.transpose(out, (1, 2, 0))


def occlusion_map(
    drops: NDArray[np.floating], size: tuple[int, int], patch: int, stride: int
) -> NDArray[np.float64]:
    """A (rows, cols) grid of drops, one per patch position -> (H, W): each pixel the mean drop
    of the patches that covered it (0 where none did)."""
    total = np.zeros(size, dtype=np.float64)
    count = np.zeros(size, dtype=np.float64)
    for r, c in np.ndindex(*drops.shape):
        y, x = r * stride, c * stride
        total[y : y + patch, x : x + patch] += drops[r, c]
        count[y : y + patch, x : x + patch] += 1
    return np.divide(total, count, out=np.zeros_like(total), where=count > 0)


# Drops are drawn relative to the largest, but never amplified more than up to this (one
# percentage point): a map whose drops are all tiny stays faint instead of showing rounding
# noise at full strength, while a confident answer's few-point drops still show.
HEAT_FLOOR = 0.01


def heat_overlay(picture: NDArray[np.uint8], heat: NDArray[np.floating]) -> NDArray[np.uint8]:
    """The input (grey or RGB) under a heat map of (H, W) probability drops: red where masking
    lowered the top class's probability, blue where it raised it, the largest change at full
    strength; the input shows through, dimmed, where nothing changed."""
    grey = picture if picture.ndim == 2 else picture.mean(axis=2)
    base = np.repeat((grey.astype(np.float64) * 0.45)[..., None], 3, axis=2)
    largest = max(float(np.abs(heat).max(initial=0.0)), HEAT_FLOOR)
    strength = np.clip(np.abs(heat) / largest, 0, 1)[..., None]
    colour = np.where(heat[..., None] >= 0, [255.0, 40.0, 0.0], [0.0, 110.0, 255.0])
    blended = base * (1 - strength) + colour * strength
    return np.rint(np.clip(blended, 0, 255)).astype(np.uint8)


def png_base64(picture: NDArray[np.uint8]) -> str:
    """A uint8 (H, W) grey or (H, W, 3) RGB array as a base64 PNG."""
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")  # (H, W) uint8 is L, (H, W, 3) RGB
    return base64.b64encode(buffer.getvalue()).decode("ascii")
