"""The manifest's preprocessing, as both training and serving run it."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageOps

from modelrepo.manifest import ImagePreprocessing
from modelrepo.preprocess import (
    image_to_pixels,
    normalize_image,
    pixels_to_image,
    pixels_to_input,
)

GREY = ImagePreprocessing(color="L", size=(8, 8), scale=1 / 255, mean=[0.5], std=[0.25])
RGB = ImagePreprocessing(
    color="RGB", size=(4, 4), scale=1 / 255, mean=[0.1, 0.2, 0.3], std=[0.5, 0.5, 0.5]
)


def test_pixels_to_input_scales_and_standardises_per_channel() -> None:
    pixels = np.zeros((2, 4, 4, 3), dtype=np.uint8)
    pixels[..., 0], pixels[..., 1], pixels[..., 2] = 255, 51, 0
    x = pixels_to_input(pixels, RGB)
    assert x.shape == (2, 3, 4, 4) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0], (1.0 - 0.1) / 0.5, rtol=1e-6)
    np.testing.assert_allclose(x[:, 1], (0.2 - 0.2) / 0.5, atol=1e-6)
    np.testing.assert_allclose(x[:, 2], (0.0 - 0.3) / 0.5, rtol=1e-6)


def test_invert() -> None:
    spec = GREY.model_copy(update={"invert": True, "mean": [0.0], "std": [1.0]})
    x = pixels_to_input(np.full((8, 8, 1), 255, dtype=np.uint8), spec)
    assert x.shape == (1, 1, 8, 8)
    assert np.all(x == 0)


def test_png_round_trip_gives_identical_input() -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(8, 8, 1), dtype=np.uint8)
    image = pixels_to_image(pixels)
    assert np.array_equal(image_to_pixels(image, GREY), pixels)
    assert np.array_equal(
        pixels_to_input(image_to_pixels(image, GREY), GREY), pixels_to_input(pixels, GREY)
    )


def test_image_is_converted_and_resized_to_the_manifest() -> None:
    image = Image.new("RGB", (30, 20), (255, 0, 0))
    pixels = image_to_pixels(image, GREY)
    assert pixels.shape == (8, 8, 1) and pixels.dtype == np.uint8
    assert int(pixels[0, 0, 0]) == round(255 * 299 / 1000)  # ITU-R 601-2 luma of pure red


@pytest.mark.parametrize(
    ("pixels", "error"),
    [
        (np.zeros((8, 8, 1), dtype=np.float32), TypeError),
        (np.zeros((7, 8, 1), dtype=np.uint8), ValueError),
        (np.zeros((8, 8, 3), dtype=np.uint8), ValueError),
    ],
)
def test_wrong_pixels_are_refused(pixels: np.ndarray, error: type[Exception]) -> None:
    with pytest.raises(error):
        pixels_to_input(pixels, GREY)


def test_an_unreadable_exif_block_leaves_the_pixels_as_they_are() -> None:
    # An eXIf chunk without a TIFF header made Pillow's exif_transpose raise SyntaxError.
    pixels = np.zeros((8, 8), np.uint8)
    pixels[2:6, 3] = 255
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    png = buffer.getvalue()
    garbage = b"garbage, not a TIFF header"
    chunk = struct.pack(">I", len(garbage)) + b"eXIf" + garbage
    chunk += struct.pack(">I", zlib.crc32(b"eXIf" + garbage))
    with Image.open(io.BytesIO(png[:-12] + chunk + png[-12:])) as image:
        image.load()
        with pytest.raises(SyntaxError):
            ImageOps.exif_transpose(image)
        np.testing.assert_array_equal(np.asarray(normalize_image(image)), pixels)
