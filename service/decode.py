"""Decode and validate an uploaded image before it may join a batch.

Everything here runs per request, so a bad upload fails alone: it never reaches the batched
onnxruntime call where one exception would fail every request in the batch.
"""

from __future__ import annotations

import io
import struct
import warnings

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from modelrepo.manifest import ImagePreprocessing
from modelrepo.preprocess import image_to_pixels, pixels_to_input
from service.errors import InvalidImage, PayloadTooLarge, UnsupportedMediaType

# Magic numbers of the formats we accept; checked before Pillow sees the bytes, so SVG, PDF,
# TIFF and anything else are refused by what they are, not by what they claim to be.
SUPPORTED_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
)

# Pillow's own bomb guard raises only past twice its limit; ours is checked first, on the header.
Image.MAX_IMAGE_PIXELS = None


def sniff_format(data: bytes) -> str:
    """The image format named by the leading bytes, or UnsupportedMediaType."""
    if not data:
        raise InvalidImage("the image is empty", detail={"bytes": 0})
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    for signature, name in _SIGNATURES:
        if data.startswith(signature):
            return name
    raise UnsupportedMediaType(
        "unsupported image type",
        detail={"supported": list(SUPPORTED_FORMATS), "first_bytes": data[:8].hex()},
    )


def check_size(data: bytes, max_bytes: int) -> None:
    if len(data) > max_bytes:
        raise PayloadTooLarge(
            "the image is larger than the upload limit",
            detail={"bytes": len(data), "limit_bytes": max_bytes},
        )


def decode_image(data: bytes, *, max_bytes: int, max_pixels: int) -> Image.Image:
    """Bytes -> a fully decoded Pillow image (first frame), with every limit checked first."""
    check_size(data, max_bytes)
    fmt = sniff_format(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[fmt])
            width, height = image.size  # from the header: nothing decoded yet
            if width * height > max_pixels:
                raise PayloadTooLarge(
                    "the image has more pixels than allowed",
                    detail={"width": width, "height": height, "limit_pixels": max_pixels},
                )
            image.seek(0)  # animated GIF/WebP: the first frame
            image.load()
    except PayloadTooLarge:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        # Pillow reports truncated and corrupt files with all of these.
        raise InvalidImage(
            "the image could not be decoded (corrupt or truncated)",
            detail={"format": fmt, "reason": str(exc)[:200]},
        ) from None
    return image


def image_to_input(image: Image.Image, spec: ImagePreprocessing) -> NDArray[np.float32]:
    """A decoded image -> the model's (1, C, H, W) input, by the manifest's preprocessing."""
    try:
        return pixels_to_input(image_to_pixels(image, spec), spec)
    except (OSError, ValueError) as exc:  # e.g. a mode Pillow cannot convert
        raise InvalidImage(
            "the image could not be converted", detail={"mode": image.mode, "reason": str(exc)}
        ) from None


def preprocess(
    data: bytes, spec: ImagePreprocessing, *, max_bytes: int, max_pixels: int
) -> NDArray[np.float32]:
    """decode -> validate -> preprocess, for one uploaded image."""
    return image_to_input(decode_image(data, max_bytes=max_bytes, max_pixels=max_pixels), spec)


def header_pixels(data: bytes) -> int:
    """Width x height from a PNG, GIF or BMP header without decoding (0 when unknown): a
    small file can still be a large image, and large images are decoded off the event loop."""
    try:
        if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR":
            width, height = struct.unpack(">II", data[16:24])
        elif data.startswith((b"GIF87a", b"GIF89a")):
            width, height = struct.unpack("<HH", data[6:10])
        elif data.startswith(b"BM") and len(data) >= 26:
            width, height = struct.unpack("<ii", data[18:26])
        else:
            return 0
    except struct.error:
        return 0
    return abs(int(width) * int(height))
