"""The preprocessing that a manifest describes, as plain numpy and Pillow.

Training builds its eval transform from these functions and the service calls the same ones,
so the same image bytes give the same tensor, bit for bit, on both sides.
"""

from __future__ import annotations

import struct

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps

from modelrepo.canonical import canonicalise_digit
from modelrepo.manifest import ImagePreprocessing

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})


def upright(image: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says; as it is when the EXIF block cannot be
    read (an eXIf chunk or APP1 segment without a TIFF header): the pixels are still good."""
    try:
        return ImageOps.exif_transpose(image)
    except (SyntaxError, ValueError, OSError, KeyError, TypeError, struct.error):
        return image


def normalize_image(image: Image.Image, *, contrasting_matte: bool = False) -> Image.Image:
    """Undo what a file format adds before the colour conversion: EXIF orientation (phone
    photos), 16-bit depth (scaled, not clipped, to 8 bits) and transparency (composited onto
    black, the background of the bundled digits; or, with `contrasting_matte`, onto white when
    what is drawn is dark: a digit drawn in black on a transparent canvas)."""
    image = upright(image)
    if image.mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image)  # uint16, or int32 for mode I: 2-4 bytes a pixel, not 8
        if values.dtype != np.uint16:
            values = values.clip(0, 65535)
        image = Image.fromarray((values >> 8).astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        level = matte_against(rgba) if contrasting_matte else 0
        background = Image.new("RGBA", rgba.size, (level, level, level, 255))
        image = Image.alpha_composite(background, rgba).convert("RGB")
    return image


def matte_against(rgba: Image.Image) -> int:
    """White (255) when the image's opaque pixels are dark on average, else black (0)."""
    pixels = np.asarray(rgba)
    opaque = pixels[:, :, 3] > 127
    if not opaque.any():
        return 0
    grey = pixels[:, :, :3][opaque].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return 255 if float(grey.mean()) < 127.5 else 0


def image_to_pixels(image: Image.Image, spec: ImagePreprocessing) -> NDArray[np.uint8]:
    """A decoded image as (H, W, C) uint8 pixels in the manifest's colour mode and size:
    canonicalised when the manifest says so (NoInk when there is no digit), else resized."""
    image = normalize_image(image, contrasting_matte=spec.canonical is not None)
    if spec.canonical is not None:
        return canonicalise_digit(image, spec.canonical, spec.size)
    if image.mode != spec.color:
        image = image.convert(spec.color)
    height, width = spec.size
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.uint8)
    if pixels.ndim == 2:  # (H, W) -> (H, W, 1)
        pixels = pixels[:, :, None]
    return pixels


def pixels_to_input(pixels: NDArray[np.uint8], spec: ImagePreprocessing) -> NDArray[np.float32]:
    """(N, H, W, C) or (H, W, C) uint8 pixels -> (N, C, H, W) float32 model input."""
    if pixels.dtype != np.uint8:
        raise TypeError(f"pixels must be uint8, got {pixels.dtype}")
    if pixels.ndim == 3:
        pixels = pixels[None]
    expected = (spec.size[0], spec.size[1], spec.channels)
    if pixels.ndim != 4 or pixels.shape[1:] != expected:
        raise ValueError(
            f"pixels must have shape (N, {', '.join(map(str, expected))}), got {pixels.shape}"
        )
    x = pixels.astype(np.float32)
    if spec.invert:
        x = np.float32(255.0) - x
    x *= np.float32(spec.scale)
    x -= np.asarray(spec.mean, dtype=np.float32)
    x /= np.asarray(spec.std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))  # (N, C, H, W)


def pixels_to_image(pixels: NDArray[np.uint8]) -> Image.Image:
    """(H, W, C) uint8 pixels as a PIL image (mode L or RGB), e.g. to save test PNGs."""
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        return Image.fromarray(pixels[:, :, 0], mode="L")
    return Image.fromarray(pixels, mode="RGB")
