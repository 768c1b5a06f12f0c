"""MNIST-style canonicalisation of a digit image, as the manifest's `canonical` describes it.

MNIST's digits were size-normalised to a 20 x 20 box with antialiasing and centred by their
centre of mass on a 28 x 28 canvas, bright ink on black. A real upload is none of that: dark
ink on light paper, a small digit anywhere on a large canvas, a phone photo with uneven light
and a paper tint. Each step below undoes one of those, in float32 numpy and Pillow only, so
training's eval transform and the service give the same bytes.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from modelrepo.manifest import DigitCanonicalisation

Grey = NDArray[np.float32]
# Below this many pixels on its shorter side an image's paper is one level, not a surface.
SMALL_IMAGE = 16


class NoInk(ValueError):
    """The image holds nothing that stands out from its background: no digit to classify."""


def canonicalise_digit(
    image: Image.Image, params: DigitCanonicalisation, size: tuple[int, int]
) -> NDArray[np.uint8]:
    """A decoded image (any mode; orientation, depth and alpha already normalised) -> the
    (height, width, 1) uint8 canvas of `size` with the digit in MNIST's form, or NoInk."""
    grey = grey_levels(image, params.work_size)
    ink = ink_on_dark(grey)
    ink = remove_background(ink, params)
    top, bottom, left, right = ink_bounds(ink)
    digit = scale_to_box(ink[top:bottom, left:right], params.box)
    canvas = centre_by_mass(digit, size)
    return np.rint(np.clip(canvas, 0, 255)).astype(np.uint8)[:, :, None]


def grey_levels(image: Image.Image, work_size: int) -> Grey:
    """Step 1: grey levels, with an image larger than `work_size` first reduced by an integer
    factor (a box average: cheap, and it keeps thin strokes' ink)."""
    grey = image if image.mode == "L" else image.convert("L")
    factor = -(-max(grey.size) // work_size)  # ceil
    if factor > 1:
        grey = grey.reduce(factor)
    return np.asarray(grey, dtype=np.float32)


def border(x: Grey) -> NDArray[np.bool_]:
    """The outer ring of the image, about 5% of its shorter side wide (at least one pixel)."""
    height, width = x.shape
    width_px = max(1, round(min(height, width) * 0.05))
    ring = np.ones_like(x, dtype=np.bool_)
    ring[width_px : height - width_px, width_px : width - width_px] = False
    return ring


def ink_on_dark(x: Grey) -> Grey:
    """Step 2: the border tells the paper; light paper means dark ink, so the image is
    inverted and ink is bright on dark as in MNIST."""
    if float(np.median(x[border(x)])) > 127.5:
        return np.float32(255) - x
    return x


def background_surface(x: Grey) -> Grey:
    """The paper's level everywhere: a quadratic surface fitted to the border, so a gradient or
    a vignette of uneven light goes with it. Border pixels far above the fit (ink touching
    the edge) are left out of a second fit."""
    height, width = x.shape
    rows, cols = np.nonzero(border(x))
    values = x[rows, cols].astype(np.float64)
    if min(height, width) < SMALL_IMAGE:  # too few border pixels to fit a surface to, and
        # the ink often touches the border of such small images (scikit-learn's 8 x 8 digits)
        return np.full_like(x, np.percentile(values, 25))

    def terms(r: NDArray[np.float64], c: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.stack([np.ones_like(r), r, c, r * r, c * c, r * c], axis=-1)

    r = rows / (height - 1) - 0.5
    c = cols / (width - 1) - 0.5
    a = terms(r, c)
    keep = np.ones(len(values), dtype=np.bool_)
    for _ in range(2):
        coef, *_ = np.linalg.lstsq(a[keep], values[keep], rcond=None)
        residual = values - a @ coef
        spread = 1.4826 * float(np.median(np.abs(residual[keep]))) + 1.0
        keep = residual < 3 * spread
    grid_r, grid_c = np.meshgrid(
        np.arange(height) / (height - 1) - 0.5, np.arange(width) / (width - 1) - 0.5, indexing="ij"
    )
    return (terms(grid_r, grid_c) @ coef).astype(np.float32)


def remove_background(x: Grey, params: DigitCanonicalisation) -> Grey:
    """Step 3: the paper's level taken off, then everything below `noise_floor` of the ink's
    contrast (paper texture, sensor noise) set to 0 and the ink stretched to full scale. NoInk
    when the ink stands less than `min_contrast` grey levels above the paper."""
    ink = np.clip(x - background_surface(x), 0, None)
    peak = ink_peak(ink)
    if peak < params.min_contrast:
        raise NoInk(
            f"the image has no ink: nothing stands {params.min_contrast} grey levels above its "
            f"background (the most is {peak:.0f})"
        )
    ink[ink < params.noise_floor * peak] = 0
    return np.minimum(ink * np.float32(255 / peak), np.float32(255))


def ink_peak(ink: Grey) -> float:
    """The ink's level: the brightest value held by at least a few pixels, so that one hot
    pixel of sensor noise does not set the scale."""
    flat = ink.ravel()
    count = min(flat.size, 4)
    return float(np.partition(flat, flat.size - count)[flat.size - count])


def ink_bounds(ink: Grey) -> tuple[int, int, int, int]:
    """Step 4: the bounding box (top, bottom, left, right; end-exclusive) of the ink, leaving
    out specks: pixels with fewer than two inked neighbours."""
    inked = ink > 0
    padded = np.pad(inked, 1).astype(np.int8)
    neighbours = sum(
        padded[1 + dr : padded.shape[0] - 1 + dr, 1 + dc : padded.shape[1] - 1 + dc]
        for dr in (-1, 0, 1)
        for dc in (-1, 0, 1)
        if dr or dc
    )
    solid = inked & (neighbours >= 2)
    mask = solid if solid.any() else inked  # a lone dot is still the only ink there is
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def scale_to_box(digit: Grey, box: int) -> Grey:
    """Step 5: the longer side scaled to `box` pixels, the aspect ratio kept, with Lanczos
    antialiasing (its overshoot clipped)."""
    height, width = digit.shape
    factor = box / max(height, width)
    new_size = (max(1, round(width * factor)), max(1, round(height * factor)))
    scaled = Image.fromarray(digit, mode="F").resize(new_size, Image.Resampling.LANCZOS)
    return np.clip(np.asarray(scaled, dtype=np.float32), 0, 255)


def centre_by_mass(digit: Grey, size: tuple[int, int]) -> Grey:
    """Step 6: the digit placed on a black canvas of `size` (height, width) so that its centre
    of mass falls where MNIST's do (whole-pixel shift; what falls outside is cut)."""
    height, width = size
    mass = float(digit.sum())
    rows, cols = np.indices(digit.shape)
    if mass > 0:
        centre_r = float((rows * digit).sum()) / mass
        centre_c = float((cols * digit).sum()) / mass
    else:
        centre_r, centre_c = (digit.shape[0] - 1) / 2, (digit.shape[1] - 1) / 2
    # MNIST's own digits have their centre of mass at (14.0, 14.0) in index coordinates
    # (measured: 14.01 and 13.98 on average over mnist-5k's test digits), i.e. at size / 2.
    top = round(height / 2 - centre_r)
    left = round(width / 2 - centre_c)
    canvas = np.zeros((height, width), dtype=np.float32)
    r0, c0 = max(0, top), max(0, left)
    r1 = min(height, top + digit.shape[0])
    c1 = min(width, left + digit.shape[1])
    if r1 > r0 and c1 > c0:
        canvas[r0:r1, c0:c1] = digit[r0 - top : r1 - top, c0 - left : c1 - left]
    return canvas
