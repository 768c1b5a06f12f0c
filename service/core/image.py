"""The image modality: decode and validate an uploaded image before it may join a batch, then
preprocess it as the manifest says.

Everything here runs per request, so a bad upload fails alone: it never reaches the batched
onnxruntime call where one exception would fail every request in the batch.
"""

from __future__ import annotations

import asyncio
import io
import struct
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from modelrepo import canonical
from modelrepo.manifest import ImagePreprocessing, Manifest
from modelrepo.preprocess import image_to_pixels, pixels_to_input
from service.core.errors import InvalidImage, NoInk, PayloadTooLarge, UnsupportedMediaType
from service.core.memory import give_back
from service.core.modality import InputLimits, Modality

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


# A progressive JPEG is decoded once per scan: libjpeg's progressive scripts use at most a dozen,
# while a 243 KB file with 7,000 scans took 4.7 s to decode (seen from a hostile client).
MAX_JPEG_SCANS = 100
# Decode work (pixels x passes over them) past which an image is decoded off the event loop,
# in the worker's one decode thread: a 1500 x 1500 PNG of a few KB takes ~9 ms to decode here.
THREAD_DECODE_WORK = 512 * 512
THREAD_DECODE_BYTES = 256 * 1024


@contextmanager
def decode_errors(fmt: str) -> Iterator[None]:
    """Pillow's ways of saying a file is corrupt or truncated, as InvalidImage (400)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise InvalidImage(
            "the image could not be decoded (corrupt or truncated)",
            detail={"format": fmt, "reason": str(exc)[:200]},
        ) from None


def jpeg_scans(data: bytes) -> int:
    """Start-of-scan markers in a JPEG. Entropy-coded data stuffs every 0xFF with 0x00, so the
    pair FF DA occurs only as a marker."""
    return data.count(b"\xff\xda")


def png_chunk_with_bad_crc(data: bytes) -> str | None:
    """The type of the first PNG chunk whose CRC does not match, or None. Pillow checks the
    CRCs of the chunks it reads itself but not of IDAT, the pixels: a corrupted one decoded
    to an answer. Checking costs one crc32 pass over the file. A truncated or garbled file is
    left to Pillow, which says so."""
    at = 8  # after the signature
    while at + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, at)
        end = at + 8 + length
        if end + 4 > len(data):
            return None
        kind = data[at + 4 : at + 8]
        if not kind.isalpha() or not kind.isascii():
            return None  # not a chunk at all: garbage, which Pillow refuses as such
        (crc,) = struct.unpack_from(">I", data, end)
        if zlib.crc32(memoryview(data)[at + 4 : end]) != crc:
            return kind.decode("latin-1")
        if kind == b"IEND":
            return None
        at = end + 4
    return None


def open_image(data: bytes, *, max_bytes: int, max_pixels: int) -> Image.Image:
    """Bytes -> a Pillow image whose header has been read and checked against every limit
    (size, pixels, JPEG scans) and whose PNG chunks pass their CRCs; nothing is decoded yet."""
    check_size(data, max_bytes)
    fmt = sniff_format(data)
    if fmt == "PNG" and (chunk := png_chunk_with_bad_crc(data)) is not None:
        raise InvalidImage(
            "a PNG chunk fails its CRC check: the file is corrupt",
            detail={"format": fmt, "chunk": chunk},
        )
    with decode_errors(fmt):
        image = Image.open(io.BytesIO(data), formats=[fmt])
        width, height = image.size  # from the header: nothing decoded yet
    if width * height > max_pixels:
        raise PayloadTooLarge(
            "the image has more pixels than allowed",
            detail={"width": width, "height": height, "limit_pixels": max_pixels},
        )
    if fmt == "JPEG" and (scans := jpeg_scans(data)) > MAX_JPEG_SCANS:
        raise InvalidImage(
            "the JPEG has more scans than any encoder writes",
            detail={"format": fmt, "scans": scans, "limit_scans": MAX_JPEG_SCANS},
        )
    return image


def load_image(image: Image.Image) -> Image.Image:
    """Decode an opened image fully (the first frame of an animation)."""
    with decode_errors(image.format or ""):
        image.seek(0)
        image.load()
    return image


def decode_image(data: bytes, *, max_bytes: int, max_pixels: int) -> Image.Image:
    """Bytes -> a fully decoded Pillow image (first frame), with every limit checked first."""
    return load_image(open_image(data, max_bytes=max_bytes, max_pixels=max_pixels))


def decode_work(image: Image.Image, data: bytes) -> int:
    """Roughly how much decoding an opened image takes: pixels x passes (a JPEG's scans)."""
    width, height = image.size
    passes = max(1, jpeg_scans(data)) if image.format == "JPEG" else 1
    return width * height * passes


def is_costly(image: Image.Image, data: bytes) -> bool:
    """Whether to decode it off the event loop."""
    return len(data) > THREAD_DECODE_BYTES or decode_work(image, data) > THREAD_DECODE_WORK


def image_to_input(image: Image.Image, spec: ImagePreprocessing) -> NDArray[np.float32]:
    """A decoded image -> the model's (1, C, H, W) input, by the manifest's preprocessing."""
    try:
        return pixels_to_input(image_to_pixels(image, spec), spec)
    except canonical.NoInk as exc:
        raise NoInk(str(exc), detail={"reason": "no_ink"}) from None
    except (OSError, ValueError) as exc:  # e.g. a mode Pillow cannot convert
        raise InvalidImage(
            "the image could not be converted", detail={"mode": image.mode, "reason": str(exc)}
        ) from None


def preprocess(
    data: bytes, spec: ImagePreprocessing, *, max_bytes: int, max_pixels: int
) -> NDArray[np.float32]:
    """decode -> validate -> preprocess, for one uploaded image."""
    return image_to_input(decode_image(data, max_bytes=max_bytes, max_pixels=max_pixels), spec)


def decode_large(image: Image.Image, spec: ImagePreprocessing) -> NDArray[np.float32]:
    """In the decode thread: decode and preprocess, then give the freed memory back."""
    try:
        return image_to_input(load_image(image), spec)
    finally:
        image.close()
        give_back()


class ImageInput(Modality[bytes]):
    """An uploaded image file (PNG, JPEG, GIF, BMP or WebP), preprocessed as the manifest says."""

    kind = "image"
    noun = "images"
    a_model = "an image model"

    def __init__(self, manifest: Manifest) -> None:
        super().__init__(manifest)
        self.spec = manifest.image_preprocessing

    def blank(self, n: int) -> NDArray[np.float32]:
        return np.zeros((n, *self.manifest.input.shape[1:]), dtype=np.float32)

    @property
    def canonicalisation(self) -> str:
        return self.spec.canonical.kind if self.spec.canonical is not None else "none"

    async def to_input(self, payload: bytes, limits: InputLimits) -> NDArray[np.float32]:
        """decode -> validate -> preprocess. The header is read here; an image that is costly
        to decode (many pixels or scans, or a large file) is decoded in the worker's one decode
        thread, so the event loop keeps answering others meanwhile and at most one large image
        per worker is in memory at a time."""
        image = open_image(payload, max_bytes=limits.max_bytes, max_pixels=limits.max_pixels)
        if limits.decoder is not None and is_costly(image, payload):
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(limits.decoder, decode_large, image, self.spec)
        return image_to_input(load_image(image), self.spec)
