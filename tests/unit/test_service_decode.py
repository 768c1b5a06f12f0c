"""Uploaded bytes -> model input: real images made with Pillow in memory, every format the
service accepts, odd-but-valid images, and everything it must refuse (and with which status)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image, ImageFile, ImageSequence, PngImagePlugin

from modelrepo.manifest import ImagePreprocessing, Manifest
from modelrepo.preprocess import pixels_to_input
from service.core.errors import (
    ApiError,
    BadRequest,
    InvalidImage,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    UnsupportedMediaType,
    ValidationFailed,
)
from service.core.image import (
    MAX_JPEG_SCANS,
    SUPPORTED_FORMATS,
    THREAD_DECODE_BYTES,
    check_size,
    decode_image,
    decode_work,
    is_costly,
    jpeg_scans,
    open_image,
    preprocess,
    sniff_format,
)
from training.data import load_dataset

EXPORTS = Path(__file__).resolve().parents[2] / "exports"
MAX_BYTES = 10 * 1024 * 1024
MAX_PIXELS = 25_000_000


@pytest.fixture(scope="module")
def spec() -> ImagePreprocessing:
    return Manifest.read(EXPORTS / "digits-cnn" / "1" / "model.json").image_preprocessing


@pytest.fixture(scope="module")
def digit() -> NDArray[np.uint8]:
    """A real 8x8 grey digit, (8, 8, 1) uint8."""
    pixels: NDArray[np.uint8] = load_dataset("digits").test_images[0]
    assert pixels.shape == (8, 8, 1) and pixels.dtype == np.uint8
    assert pixels.min() == 0 and pixels.max() > 128  # a real digit, not a blank
    return pixels


def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def run(data: bytes, spec: ImagePreprocessing, **limits: int) -> NDArray[np.float32]:
    return preprocess(
        data,
        spec,
        max_bytes=limits.get("max_bytes", MAX_BYTES),
        max_pixels=limits.get("max_pixels", MAX_PIXELS),
    )


def grey(value: int, spec: ImagePreprocessing) -> NDArray[np.float32]:
    """The model input of an 8x8 image whose every pixel is `value`."""
    return pixels_to_input(np.full((8, 8, 1), value, dtype=np.uint8), spec)


def digit_image(pixels: NDArray[np.uint8]) -> Image.Image:
    return Image.fromarray(pixels[:, :, 0], mode="L")


def noise_image(size: tuple[int, int] = (64, 64)) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0]), dtype=np.uint8), mode="L")


# ---------------------------------------------------------------------------------------------
# Every supported format


LOSSLESS = [
    ("PNG", {}),
    ("GIF", {}),
    ("BMP", {}),
    ("WEBP", {"lossless": True}),
]


@pytest.mark.parametrize(("fmt", "options"), LOSSLESS)
def test_lossless_formats_give_exactly_the_reference_input(
    fmt: str, options: dict[str, Any], spec: ImagePreprocessing, digit: NDArray[np.uint8]
) -> None:
    data = encode(digit_image(digit), fmt, **options)
    assert sniff_format(data) == fmt
    x = run(data, spec)
    assert x.shape == (1, 1, 8, 8)
    assert x.dtype == np.float32
    assert np.array_equal(x, pixels_to_input(digit, spec))


@pytest.mark.parametrize("quality", [95, 75])
def test_jpeg_decodes_close_to_the_reference_input(
    quality: int, spec: ImagePreprocessing, digit: NDArray[np.uint8]
) -> None:
    data = encode(digit_image(digit), "JPEG", quality=quality)
    assert sniff_format(data) == "JPEG"
    x = run(data, spec)
    assert x.shape == (1, 1, 8, 8)
    assert x.dtype == np.float32
    # Lossy, but the same digit: within a few grey levels per pixel on average.
    grey_levels = np.abs(x - pixels_to_input(digit, spec)) * spec.std[0] / spec.scale
    assert float(grey_levels.mean()) < 8


def test_lossy_webp_decodes(spec: ImagePreprocessing, digit: NDArray[np.uint8]) -> None:
    data = encode(digit_image(digit), "WEBP", quality=90)
    assert sniff_format(data) == "WEBP"
    x = run(data, spec)
    assert x.shape == (1, 1, 8, 8) and x.dtype == np.float32
    assert np.isfinite(x).all()
    reference = pixels_to_input(digit, spec)
    assert np.corrcoef(x.ravel(), reference.ravel())[0, 1] > 0.95


def test_real_digit_png_is_bit_identical_to_pixels_to_input(
    spec: ImagePreprocessing, digit: NDArray[np.uint8]
) -> None:
    data = encode(digit_image(digit), "PNG")
    x = preprocess(data, spec, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
    assert np.array_equal(x, pixels_to_input(digit, spec))
    assert x.flags["C_CONTIGUOUS"]


def test_decode_image_returns_the_decoded_first_frame(digit: NDArray[np.uint8]) -> None:
    image = decode_image(encode(digit_image(digit), "PNG"), max_bytes=1024, max_pixels=64)
    assert image.size == (8, 8)
    assert image.mode == "L"
    assert np.array_equal(np.asarray(image), digit[:, :, 0])


# ---------------------------------------------------------------------------------------------
# Odd but valid images


def test_fully_transparent_white_rgba_becomes_black(spec: ImagePreprocessing) -> None:
    data = encode(Image.new("RGBA", (8, 8), (255, 255, 255, 0)), "PNG")
    assert np.array_equal(run(data, spec), grey(0, spec))


def test_opaque_white_rgba_stays_white(spec: ImagePreprocessing) -> None:
    data = encode(Image.new("RGBA", (8, 8), (255, 255, 255, 255)), "PNG")
    assert np.array_equal(run(data, spec), grey(255, spec))


def test_half_transparent_white_is_composited_onto_black(spec: ImagePreprocessing) -> None:
    data = encode(Image.new("RGBA", (8, 8), (255, 255, 255, 128)), "PNG")
    x = run(data, spec)
    # 255 * 128/255 = 128 over black, give or take Pillow's rounding.
    assert np.allclose(x, grey(128, spec), atol=1.5 * spec.scale / spec.std[0])
    assert not np.allclose(x, grey(255, spec))


def test_transparent_rgba_webp_becomes_black(spec: ImagePreprocessing) -> None:
    data = encode(Image.new("RGBA", (8, 8), (255, 255, 255, 0)), "WEBP", lossless=True)
    assert np.array_equal(run(data, spec), grey(0, spec))


@pytest.mark.parametrize(("alpha", "expected"), [(0, 0), (255, 255)])
def test_la_image_alpha_is_respected(alpha: int, expected: int, spec: ImagePreprocessing) -> None:
    data = encode(Image.new("LA", (8, 8), (255, alpha)), "PNG")
    assert decode_image(data, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS).mode == "LA"
    assert np.array_equal(run(data, spec), grey(expected, spec))


def palette_half_transparent() -> Image.Image:
    """Left half palette index 0 (opaque white), right half index 1 (transparent white)."""
    image = Image.new("P", (8, 8), 0)
    image.putpalette([255, 255, 255, 255, 255, 255] + [0, 0, 0] * 254)
    image.paste(1, (4, 0, 8, 8))
    return image


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_transparency_becomes_black(fmt: str, spec: ImagePreprocessing) -> None:
    data = encode(palette_half_transparent(), fmt, transparency=1)
    decoded = decode_image(data, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
    assert decoded.mode == "P" and "transparency" in decoded.info
    x = run(data, spec)
    assert np.array_equal(x[..., :4], grey(255, spec)[..., :4])  # opaque white stays white
    assert np.array_equal(x[..., 4:], grey(0, spec)[..., 4:])  # transparent becomes black


@pytest.mark.parametrize(
    ("mode", "colour"), [("L", 200), ("RGB", (200, 200, 200))], ids=["L", "RGB"]
)
def test_colour_key_transparency_of_grey_and_rgb_pngs_becomes_black(
    mode: str, colour: int | tuple[int, int, int], spec: ImagePreprocessing
) -> None:
    # A PNG tRNS chunk marks every pixel of this colour fully transparent, exactly like a
    # palette image's transparency; such pixels must be flattened onto black too.
    data = encode(Image.new(mode, (8, 8), colour), "PNG", transparency=colour)
    assert "transparency" in decode_image(data, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS).info
    assert np.array_equal(run(data, spec), grey(0, spec))


@pytest.mark.parametrize(("cmyk", "expected"), [((0, 0, 0, 0), 255), ((0, 0, 0, 255), 0)])
def test_cmyk_jpeg_is_converted(
    cmyk: tuple[int, int, int, int], expected: int, spec: ImagePreprocessing
) -> None:
    data = encode(Image.new("CMYK", (8, 8), cmyk), "JPEG", quality=95)
    assert decode_image(data, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS).mode == "CMYK"
    x = run(data, spec)
    assert x.shape == (1, 1, 8, 8)
    assert np.allclose(x, grey(expected, spec), atol=3 * spec.scale / spec.std[0])


def test_16_bit_grey_png_is_accepted(spec: ImagePreprocessing) -> None:
    data = encode(Image.fromarray(np.zeros((8, 8), dtype=np.uint16)), "PNG")
    assert decode_image(data, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS).mode == "I;16"
    x = run(data, spec)
    assert x.shape == (1, 1, 8, 8) and x.dtype == np.float32
    assert np.array_equal(x, grey(0, spec))


def test_16_bit_grey_png_is_scaled_to_8_bits(
    spec: ImagePreprocessing, digit: NDArray[np.uint8]
) -> None:
    # The same digit stored with 16 bits per pixel (v * 257 maps 0..255 onto 0..65535) must
    # give the same input as the 8-bit image; Pillow's I;16 -> L conversion clips instead,
    # so every non-zero pixel (and e.g. mid-grey 32768) comes out as 255.
    wide = digit[:, :, 0].astype(np.uint16) * 257
    data = encode(Image.fromarray(wide), "PNG")
    assert np.array_equal(run(data, spec), pixels_to_input(digit, spec))


def test_one_bit_image_is_converted(spec: ImagePreprocessing) -> None:
    checker = (np.indices((8, 8)).sum(axis=0) % 2).astype(bool)
    data = encode(Image.fromarray(checker), "PNG")
    assert decode_image(data, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS).mode == "1"
    expected = pixels_to_input((checker * 255).astype(np.uint8)[:, :, None], spec)
    assert np.array_equal(run(data, spec), expected)


@pytest.mark.parametrize(("first", "second"), [(0, 255), (255, 0)])
def test_animated_gif_uses_the_first_frame(
    first: int, second: int, spec: ImagePreprocessing
) -> None:
    frames = [Image.new("L", (8, 8), first), Image.new("L", (8, 8), second)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    with Image.open(io.BytesIO(data)) as check:
        assert sum(1 for _ in ImageSequence.Iterator(check)) == 2
    assert np.array_equal(run(data, spec), grey(first, spec))


def test_animated_webp_uses_the_first_frame(spec: ImagePreprocessing) -> None:
    frames = [Image.new("RGB", (8, 8), (0, 0, 0)), Image.new("RGB", (8, 8), (255, 255, 255))]
    data = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    with Image.open(io.BytesIO(data)) as check:
        assert sum(1 for _ in ImageSequence.Iterator(check)) == 2
    assert np.array_equal(run(data, spec), grey(0, spec))


def test_large_image_is_resized_down(spec: ImagePreprocessing) -> None:
    # 300x200: the left half white, the right half black.
    image = Image.new("L", (300, 200), 0)
    image.paste(255, (0, 0, 150, 200))
    x = run(encode(image, "PNG"), spec)
    assert x.shape == (1, 1, 8, 8)
    reference = np.asarray(image.resize((8, 8), Image.Resampling.BILINEAR), dtype=np.uint8)
    assert np.array_equal(x, pixels_to_input(reference[:, :, None], spec))
    assert np.array_equal(x[..., :3], grey(255, spec)[..., :3])
    assert np.array_equal(x[..., 5:], grey(0, spec)[..., 5:])


def test_rgb_image_is_converted_to_grey(spec: ImagePreprocessing) -> None:
    data = encode(Image.new("RGB", (8, 8), (255, 0, 0)), "PNG")
    # ITU-R 601 luma of pure red: 255 * 299/1000 = 76.
    assert np.array_equal(run(data, spec), grey(76, spec))


# ---------------------------------------------------------------------------------------------
# Rejected uploads


def test_empty_bytes_are_invalid() -> None:
    with pytest.raises(InvalidImage) as info:
        sniff_format(b"")
    assert info.value.status == 400
    with pytest.raises(InvalidImage) as info:
        decode_image(b"", max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
    assert info.value.status == 400
    assert info.value.body()["detail"] == {"bytes": 0}


UNSUPPORTED = {
    "random": np.random.default_rng(1).integers(0, 256, 512, dtype=np.uint8).tobytes(),
    "svg": b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="8" height="8">'
    b'<rect width="8" height="8" fill="white"/></svg>',
    "svg-bare": b'<svg xmlns="http://www.w3.org/2000/svg"></svg>',
    "pdf": b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\n%%EOF\n",
    "tiff-header": b"II*\x00\x08\x00\x00\x00" + bytes(64),
    "riff-not-webp": b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(32),
    "gif-prefix-only": b"GIF88a" + bytes(16),
}


@pytest.mark.parametrize("name", sorted(UNSUPPORTED))
def test_unsupported_types_are_415(name: str, spec: ImagePreprocessing) -> None:
    data = UNSUPPORTED[name]
    with pytest.raises(UnsupportedMediaType) as info:
        run(data, spec)
    error = info.value
    assert error.status == 415
    assert error.detail["supported"] == ["PNG", "JPEG", "GIF", "BMP", "WEBP"]
    assert error.detail["first_bytes"] == data[:8].hex()


def test_a_real_tiff_file_is_415(spec: ImagePreprocessing, digit: NDArray[np.uint8]) -> None:
    data = encode(digit_image(digit), "TIFF")
    assert data[:4] in (b"II*\x00", b"MM\x00*")
    with pytest.raises(UnsupportedMediaType) as info:
        run(data, spec)
    assert info.value.status == 415
    assert list(SUPPORTED_FORMATS) == info.value.detail["supported"]


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_images_are_invalid(fmt: str, spec: ImagePreprocessing) -> None:
    data = encode(noise_image(), fmt)
    assert run(data, spec).shape == (1, 1, 8, 8)  # the whole file is fine
    with pytest.raises(InvalidImage) as info:
        run(data[: len(data) // 2], spec)
    assert info.value.status == 400
    assert info.value.detail["format"] == fmt
    assert "truncated" in info.value.detail["reason"]


@pytest.mark.parametrize(
    "data",
    [
        b"\x89PNG\r\n\x1a\n",
        b"\x89PNG\r\n\x1a\n" + bytes(40),
        b"\xff\xd8\xff",
        b"\xff\xd8\xff\xe0" + bytes(40),
        b"GIF89a",
        b"GIF87a" + bytes(40),
        b"BM",
        b"BM" + bytes(60),
        b"RIFF\x00\x00\x00\x00WEBP",
        b"RIFF\x00\x00\x00\x00WEBPVP8 " + bytes(40),
    ],
    ids=lambda d: d[:4].hex(),
)
def test_right_magic_but_no_image_is_invalid(data: bytes, spec: ImagePreprocessing) -> None:
    with pytest.raises(InvalidImage) as info:
        run(data, spec)
    assert info.value.status == 400


def test_bytes_decide_the_format_not_what_they_claim(
    spec: ImagePreprocessing, digit: NDArray[np.uint8]
) -> None:
    jpeg = encode(digit_image(digit), "JPEG")
    # A JPEG uploaded as "digit.png" is still a JPEG: the bytes are sniffed, never a name.
    assert sniff_format(jpeg) == "JPEG"
    assert decode_image(jpeg, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS).format == "JPEG"
    # JPEG data behind a PNG signature is tried as PNG only, and refused.
    with pytest.raises(InvalidImage) as info:
        run(b"\x89PNG\r\n\x1a\n" + jpeg, spec)
    assert info.value.detail["format"] == "PNG"
    # SVG text stays SVG whatever it is called.
    with pytest.raises(UnsupportedMediaType):
        run(UNSUPPORTED["svg"], spec)


def test_over_max_bytes_is_413(spec: ImagePreprocessing, digit: NDArray[np.uint8]) -> None:
    data = encode(digit_image(digit), "PNG")
    limit = len(data) - 1
    with pytest.raises(PayloadTooLarge) as info:
        run(data, spec, max_bytes=limit)
    assert info.value.status == 413
    assert info.value.detail == {"bytes": len(data), "limit_bytes": limit}
    # Exactly at the limit is fine.
    assert run(data, spec, max_bytes=len(data)).shape == (1, 1, 8, 8)


def test_size_is_checked_before_the_type() -> None:
    with pytest.raises(PayloadTooLarge):
        decode_image(UNSUPPORTED["pdf"], max_bytes=10, max_pixels=MAX_PIXELS)
    check_size(b"x" * 10, 10)  # at the limit: no error
    with pytest.raises(PayloadTooLarge):
        check_size(b"x" * 11, 10)


@pytest.fixture(scope="module")
def bomb_png() -> bytes:
    """A tiny PNG that declares 6000x6000 = 36 Mpx."""
    data = encode(Image.new("1", (6000, 6000), 0), "PNG")
    assert len(data) < 100_000
    return data


def test_decompression_bomb_is_413_before_decoding(
    bomb_png: bytes, spec: ImagePreprocessing, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_decoding(self: ImageFile.ImageFile) -> None:
        raise AssertionError("the pixels were decoded before the size check")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)  # decoding fails the test
    with pytest.raises(PayloadTooLarge) as info:
        run(bomb_png, spec, max_pixels=25_000_000)
    assert info.value.status == 413
    assert info.value.detail == {"width": 6000, "height": 6000, "limit_pixels": 25_000_000}


def test_pixel_limit_is_inclusive(spec: ImagePreprocessing) -> None:
    data = encode(Image.new("L", (10, 10), 0), "PNG")
    assert run(data, spec, max_pixels=100).shape == (1, 1, 8, 8)
    with pytest.raises(PayloadTooLarge) as info:
        run(data, spec, max_pixels=99)
    assert info.value.detail == {"width": 10, "height": 10, "limit_pixels": 99}


def test_truncated_bomb_is_413_not_400(bomb_png: bytes, spec: ImagePreprocessing) -> None:
    with pytest.raises(PayloadTooLarge) as info:
        run(bomb_png[: len(bomb_png) // 2], spec)
    assert info.value.status == 413
    assert (info.value.detail["width"], info.value.detail["height"]) == (6000, 6000)


def test_bomb_in_other_formats_is_413(spec: ImagePreprocessing) -> None:
    gif = encode(Image.new("L", (5001, 5001), 0), "GIF")
    with pytest.raises(PayloadTooLarge) as info:
        run(gif, spec)
    assert (info.value.detail["width"], info.value.detail["height"]) == (5001, 5001)


# ---------------------------------------------------------------------------------------------
# The errors themselves


@pytest.mark.parametrize(
    ("error_type", "status"),
    [
        (ApiError, 500),
        (BadRequest, 400),
        (InvalidImage, 400),
        (NotFound, 404),
        (MethodNotAllowed, 405),
        (PayloadTooLarge, 413),
        (UnsupportedMediaType, 415),
        (ValidationFailed, 422),
        (ServiceUnavailable, 503),
    ],
)
def test_error_status_and_body_shape(error_type: type[ApiError], status: int) -> None:
    error = error_type("what happened", detail={"field": "x"})
    assert error.status == status
    assert error.body() == {"error": "what happened", "detail": {"field": "x"}}
    assert str(error) == "what happened"
    default = error_type()
    body = default.body()
    assert set(body) == {"error", "detail"}
    assert isinstance(body["error"], str) and body["error"] == error_type.error
    assert body["detail"] is None


def test_status_can_be_overridden_per_instance() -> None:
    error = BadRequest("teapot", status=418)
    assert error.status == 418
    assert BadRequest().status == 400  # the class default is untouched


def test_only_service_unavailable_has_retry_after() -> None:
    assert ServiceUnavailable().headers() == {"Retry-After": "1"}
    assert ServiceUnavailable("busy", retry_after_s=7).headers() == {"Retry-After": "7"}
    assert ServiceUnavailable("busy", {"queue": 3}).body() == {
        "error": "busy",
        "detail": {"queue": 3},
    }
    assert InvalidImage().headers() == {}
    assert PayloadTooLarge().headers() == {}


def test_decode_errors_have_the_api_shape(spec: ImagePreprocessing) -> None:
    with pytest.raises(UnsupportedMediaType) as info:
        run(UNSUPPORTED["pdf"], spec)
    body = info.value.body()
    assert set(body) == {"error", "detail"}
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["detail"], dict)


def test_exif_orientation_is_applied_like_a_photo_viewer_shows_it(
    spec: ImagePreprocessing,
) -> None:
    """A phone stores a rotated photo as-is plus an EXIF Orientation tag; the service must see
    what a viewer shows: here a white left half after rotating by 90 degrees."""
    stored = np.zeros((8, 8), dtype=np.uint8)
    stored[:4, :] = 255  # white top half as stored
    exif = Image.Exif()
    exif[0x0112] = 8  # Orientation: rotate 90 degrees clockwise to display (white -> left)
    buffer = io.BytesIO()
    Image.fromarray(stored, mode="L").save(buffer, format="JPEG", quality=100, exif=exif)
    x = preprocess(buffer.getvalue(), spec, max_bytes=1 << 20, max_pixels=1 << 20)[0, 0]
    assert x[:, :3].mean() > x[:, 5:].mean() + 1.0  # left is white, right is black


def scan_heavy_jpeg(repeats: int) -> bytes:
    """A small JPEG whose one scan is repeated `repeats` times (each a full decode pass)."""
    buffer = io.BytesIO()
    Image.new("L", (8, 8), 128).save(buffer, "JPEG")
    data = buffer.getvalue()
    scan = data.index(b"\xff\xda")
    return data[:scan] + data[scan:-2] * repeats + data[-2:]


def test_jpeg_scans_are_counted_from_the_markers() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (9, 99, 199)).save(buffer, "JPEG", progressive=True)
    assert 1 < jpeg_scans(buffer.getvalue()) <= 12  # libjpeg's progressive script
    assert jpeg_scans(scan_heavy_jpeg(5)) == 5


def test_a_jpeg_with_more_scans_than_any_encoder_writes_is_refused_before_decoding() -> None:
    with pytest.raises(InvalidImage) as refused:
        open_image(scan_heavy_jpeg(MAX_JPEG_SCANS + 1), max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
    assert refused.value.detail["scans"] == MAX_JPEG_SCANS + 1
    opened = open_image(scan_heavy_jpeg(3), max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
    assert opened.size == (8, 8)


def png_with_chunk_changed(data: bytes, kind: bytes) -> bytes:
    """`data` with the first data byte of its first `kind` chunk flipped, CRC left as it was."""
    at = data.index(kind) + 4
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


@pytest.mark.parametrize("kind", [b"IDAT", b"IHDR", b"tEXt"])
def test_a_png_chunk_that_fails_its_crc_is_refused(kind: bytes, spec: ImagePreprocessing) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "hello")
    good = encode(Image.new("L", (8, 8), 200), "PNG", pnginfo=info)
    assert run(good, spec).shape == (1, 1, 8, 8)
    with pytest.raises(InvalidImage) as refused:
        run(png_with_chunk_changed(good, kind), spec)
    assert refused.value.status == 400
    assert refused.value.detail["chunk"] == kind.decode()


def test_costly_means_many_pixel_passes_or_a_large_file() -> None:
    small = encode(Image.new("L", (8, 8), 0), "PNG")
    assert not is_costly(Image.open(io.BytesIO(small)), small)
    big = encode(Image.new("L", (600, 600), 0), "PNG")  # 360k pixels, a few hundred bytes
    assert len(big) < THREAD_DECODE_BYTES and is_costly(Image.open(io.BytesIO(big)), big)
    scans = scan_heavy_jpeg(MAX_JPEG_SCANS)
    assert decode_work(Image.open(io.BytesIO(scans)), scans) == 64 * MAX_JPEG_SCANS
