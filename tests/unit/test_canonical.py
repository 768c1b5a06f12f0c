"""MNIST-style digit canonicalisation (modelrepo.canonical).

Each step on its own (grey levels and the work-size reduction, the border ring, inversion of
light paper, the background surface fit, noise floor and contrast stretch, the speck-proof
bounding box, the aspect-keeping scale to the box, centring by mass), then the whole function
on synthetic digits drawn with Pillow (inversion, noise, uneven light, placement, specks, ink on
the border, blank images, huge images), on real MNIST digits (nearly idempotent), and through
the manifest (validation) and image_to_pixels.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image, ImageDraw
from pydantic import ValidationError

from modelrepo.canonical import (
    NoInk,
    background_surface,
    border,
    canonicalise_digit,
    centre_by_mass,
    grey_levels,
    ink_bounds,
    ink_on_dark,
    ink_peak,
    remove_background,
    scale_to_box,
)
from modelrepo.manifest import DigitCanonicalisation, ImagePreprocessing
from modelrepo.preprocess import image_to_pixels
from training.data import load_dataset
from training.data.base import ImageDataset

PARAMS = DigitCanonicalisation()
SIZE = (28, 28)
Floats = NDArray[np.float64]


def seven(
    size: tuple[int, int] = (100, 100),
    at: tuple[float, float] = (25, 15),
    scale: float = 1.0,
    fg: int = 255,
    bg: int = 0,
) -> Image.Image:
    """A crossed "7" (not point-symmetric, so its centre of mass is off the half-pixel) of
    about 50 x 75 pixels times `scale`, with its top-left corner at `at` (x, y)."""
    image = Image.new("L", size, bg)
    draw = ImageDraw.Draw(image)
    x, y = at
    s = scale
    width = max(1, round(9 * s))
    draw.line([x, y + 5 * s, x + 48 * s, y + 5 * s], fill=fg, width=width)
    draw.line([x + 48 * s, y + 5 * s, x + 18 * s, y + 70 * s], fill=fg, width=width)
    draw.line([x + 15 * s, y + 38 * s, x + 45 * s, y + 38 * s], fill=fg, width=round(7 * s))
    return image


def canon(image: Image.Image, params: DigitCanonicalisation = PARAMS) -> Floats:
    """The canonical 28 x 28 canvas as 2-D float64, for arithmetic."""
    out = canonicalise_digit(image, params, SIZE)
    assert out.shape == (*SIZE, 1)
    assert out.dtype == np.uint8
    return out[:, :, 0].astype(np.float64)


def from_array(values: NDArray[np.floating]) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")


def mean_abs(a: Floats, b: Floats) -> float:
    return float(np.abs(a - b).mean())


def centre_of_mass(x: Floats) -> tuple[float, float]:
    rows, cols = np.indices(x.shape)
    mass = float(x.sum())
    return float((rows * x).sum()) / mass, float((cols * x).sum()) / mass


@pytest.fixture(scope="module")
def reference() -> Floats:
    """The clean digit, bright on black: what the distorted versions are compared with."""
    return canon(seven())


@pytest.fixture(scope="module")
def mnist() -> ImageDataset:
    return load_dataset("mnist-5k")


# --- step 1: grey levels -------------------------------------------------------------------


def test_grey_levels_converts_any_mode_to_float32_grey() -> None:
    grey = grey_levels(Image.new("RGB", (40, 30), (255, 0, 0)), PARAMS.work_size)
    assert grey.dtype == np.float32
    assert grey.shape == (30, 40)
    assert np.all(grey == 76)  # ITU-R 601 luma of pure red, as Pillow computes it


@pytest.mark.parametrize(
    ("size", "shape"),
    [((512, 300), (300, 512)), ((513, 300), (150, 257)), ((1030, 700), (234, 344))],
)
def test_grey_levels_reduces_by_the_integer_factor_that_fits_work_size(
    size: tuple[int, int], shape: tuple[int, int]
) -> None:
    assert grey_levels(Image.new("L", size), 512).shape == shape


def test_grey_levels_reduction_is_a_box_average() -> None:
    checker = (np.indices((1024, 1024)).sum(axis=0) % 2 * 255).astype(np.uint8)
    grey = grey_levels(Image.fromarray(checker, mode="L"), 512)
    assert grey.shape == (512, 512)
    assert np.all(grey == 128)  # 127.5, rounded: a 1-pixel pattern averages, it is not sampled


# --- step 2: which way round the ink is ----------------------------------------------------


@pytest.mark.parametrize(("shape", "ring_px"), [((100, 60), 3), ((10, 10), 1), ((2, 50), 1)])
def test_border_is_a_ring_about_five_percent_wide(shape: tuple[int, int], ring_px: int) -> None:
    ring = border(np.zeros(shape, dtype=np.float32))
    height, width = shape
    inner = max(0, height - 2 * ring_px) * max(0, width - 2 * ring_px)
    assert int(ring.sum()) == height * width - inner
    assert ring[0].all() and ring[-1].all() and ring[:, 0].all() and ring[:, -1].all()


def test_ink_on_dark_inverts_light_paper_only() -> None:
    light = np.asarray(seven(fg=20, bg=230), dtype=np.float32)
    dark = np.asarray(seven(fg=230, bg=20), dtype=np.float32)
    np.testing.assert_array_equal(ink_on_dark(light), 255 - light)
    np.testing.assert_array_equal(ink_on_dark(dark), dark)


@pytest.mark.parametrize(("fg", "bg"), [(0, 255), (30, 220), (60, 190), (100, 160)])
def test_dark_on_light_canonicalises_exactly_like_bright_on_black(
    fg: int, bg: int, reference: Floats
) -> None:
    np.testing.assert_array_equal(canon(seven(fg=fg, bg=bg)), reference)
    np.testing.assert_array_equal(canon(seven(fg=fg, bg=bg).convert("RGB")), reference)


# --- step 3: background and noise ----------------------------------------------------------


def test_background_surface_recovers_quadratic_light() -> None:
    r, c = np.meshgrid(np.linspace(-0.5, 0.5, 80), np.linspace(-0.5, 0.5, 120), indexing="ij")
    light = (100 + 30 * r - 20 * c + 40 * r * r - 25 * c * c + 15 * r * c).astype(np.float32)
    surface = background_surface(light)
    assert surface.shape == light.shape
    np.testing.assert_allclose(surface, light, atol=1e-3)


def test_background_surface_is_not_pulled_up_by_ink_on_the_border() -> None:
    """A stroke running off the right edge on white paper: still dark-on-light, and the fit
    stays on the paper although the ring's plain mean does not."""
    image = Image.new("L", (100, 100), 230)
    draw = ImageDraw.Draw(image)
    draw.line([40, 50, 100, 50], fill=20, width=30)
    draw.line([40, 20, 40, 80], fill=20, width=10)
    ink = ink_on_dark(grey_levels(image, PARAMS.work_size))
    assert float(ink[50, 50]) == 235  # inverted: the ink is bright
    assert float(ink[border(ink)].mean()) > 40  # a plain fit would be 15+ levels too high
    np.testing.assert_allclose(background_surface(ink), 25, atol=0.5)


def test_digit_touching_the_edge_canonicalises_like_its_bright_on_black_twin() -> None:
    def touching(fg: int, bg: int) -> Image.Image:
        image = Image.new("L", (120, 100), bg)
        draw = ImageDraw.Draw(image)
        draw.line([50, 50, 120, 50], fill=fg, width=24)
        draw.line([50, 15, 50, 85], fill=fg, width=10)
        return image

    out = canon(touching(20, 230))
    np.testing.assert_array_equal(out, canon(touching(255, 0)))
    assert out.max() == 255
    assert np.allclose(centre_of_mass(out), (14, 14), atol=0.5)


def test_a_small_images_paper_is_one_level_that_ink_on_the_border_does_not_lift() -> None:
    tiny = np.array([[10, 10, 10], [10, 200, 10], [10, 50, 10]], dtype=np.float32)
    np.testing.assert_array_equal(background_surface(tiny), np.full((3, 3), 10))
    # An 8 x 8 digit whose strokes cover a third of the border: the paper is still 0.
    small = np.zeros((8, 8), dtype=np.float32)
    small[:, 3:5] = 255
    small[0, :] = 255
    np.testing.assert_array_equal(background_surface(small), np.zeros((8, 8)))


def test_remove_background_floors_faint_marks_and_stretches_the_ink() -> None:
    x = np.full((60, 60), 50, dtype=np.float32)
    x[20:40, 25:35] = 150  # ink: 100 above the paper
    x[5:15, 45:55] = 64  # a faint smudge, 14 above: under 15% of the ink's contrast
    out = remove_background(x, PARAMS)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[20:40, 25:35], 255)
    out[20:40, 25:35] = 0
    assert not out.any()


@pytest.mark.parametrize(("ink", "is_ink"), [(139, False), (140, True)])
def test_min_contrast_is_the_threshold_for_ink(ink: int, is_ink: bool) -> None:
    image = Image.new("L", (60, 60), 100)
    ImageDraw.Draw(image).rectangle([20, 20, 35, 40], fill=ink)  # min_contrast is 40
    if is_ink:
        assert canon(image).max() == 255
    else:
        with pytest.raises(NoInk, match="no ink"):
            canon(image)


def test_ink_peak_is_held_by_at_least_four_pixels() -> None:
    ink = np.zeros((20, 20), dtype=np.float32)
    ink.flat[[3, 50, 170]] = [255, 200, 180]
    assert ink_peak(ink) == 0  # three hot pixels do not set the scale
    ink.flat[300] = 90
    assert ink_peak(ink) == 90
    assert ink_peak(np.array([[7, 3]], dtype=np.float32)) == 3  # fewer than four: the least


def test_small_gaussian_noise_is_removed(reference: Floats) -> None:
    rng = np.random.default_rng(0)
    clean = np.asarray(seven(fg=60, bg=190), dtype=np.float64)
    out = canon(from_array(clean + rng.normal(0, 5, clean.shape)))
    assert not out[reference == 0].any()  # exactly 0 away from the digit
    assert mean_abs(out, reference) < 4  # measured 2.5: the ink itself is noisy


def test_paper_texture_is_removed(reference: Floats) -> None:
    rng = np.random.default_rng(1)
    clean = np.asarray(seven(fg=40, bg=210), dtype=np.float64)
    out = canon(from_array(clean + rng.uniform(-12, 12, clean.shape)))
    assert not out[reference == 0].any()
    assert mean_abs(out, reference) < 3  # measured 1.4


def light_gradient(shape: tuple[int, int]) -> Floats:
    return np.broadcast_to(np.linspace(-40, 40, shape[1]), shape).astype(np.float64)


def light_vignette(shape: tuple[int, int]) -> Floats:
    rows, cols = np.indices(shape)
    h, w = shape
    return -60 * (((rows - h / 2) / (h / 2)) ** 2 + ((cols - w / 2) / (w / 2)) ** 2) / 2


@pytest.mark.parametrize(
    "light",
    [light_gradient, lambda shape: light_gradient(shape[::-1]).T, light_vignette],
    ids=["left-right", "top-bottom", "vignette"],
)
def test_uneven_light_canonicalises_close_to_the_clean_digit(
    light: Callable[[tuple[int, int]], Floats], reference: Floats
) -> None:
    paper = np.asarray(seven(fg=60, bg=200), dtype=np.float64)
    out = canon(from_array(paper + light(paper.shape)))
    assert mean_abs(out, reference) < 0.5  # measured 0.04-0.07


@pytest.mark.parametrize("light", [light_gradient, light_vignette], ids=["gradient", "vignette"])
def test_uneven_light_without_ink_is_blank(light: Callable[[tuple[int, int]], Floats]) -> None:
    paper = np.full((150, 200), 180.0) + light((150, 200))
    with pytest.raises(NoInk, match="no ink"):
        canon(from_array(paper))


# --- step 4: bounding box ------------------------------------------------------------------


def test_ink_bounds_leave_out_specks() -> None:
    ink = np.zeros((100, 100), dtype=np.float32)
    ink[30:50, 40:52] = 255
    ink[2, 2] = ink[95, 90] = 255  # lone pixels
    ink[80, 10:12] = 255  # a pair: each has one inked neighbour
    assert ink_bounds(ink) == (30, 50, 40, 52)


def test_ink_bounds_of_a_lone_dot_is_the_dot() -> None:
    ink = np.zeros((30, 30), dtype=np.float32)
    ink[7, 19] = 100
    assert ink_bounds(ink) == (7, 8, 19, 20)


@pytest.mark.parametrize(
    ("canvas", "at"), [((400, 300), (300, 200)), ((300, 400), (5, 10)), ((500, 500), (420, 400))]
)
def test_off_centre_digit_on_a_large_canvas_is_the_digit_alone(
    canvas: tuple[int, int], at: tuple[int, int], reference: Floats
) -> None:
    out = canon(seven(size=canvas, at=at))
    assert mean_abs(out, reference) < 0.5  # measured 0: the same pixels, cropped


def test_specks_far_from_the_digit_do_not_widen_the_box(reference: Floats) -> None:
    image = seven()
    draw = ImageDraw.Draw(image)
    draw.point([(90, 90), (8, 92), (92, 8)], fill=255)
    draw.point([(88, 10), (89, 10)], fill=255)
    np.testing.assert_array_equal(canon(image), reference)


# --- step 5: scale to the box --------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "scaled"), [((60, 10), (20, 3)), ((10, 60), (3, 20)), ((3, 3), (20, 20))]
)
def test_scale_to_box_keeps_the_aspect_ratio(
    shape: tuple[int, int], scaled: tuple[int, int]
) -> None:
    out = scale_to_box(np.full(shape, 255, dtype=np.float32), 20)
    assert out.shape == scaled
    assert out.min() >= 0 and out.max() <= 255  # Lanczos overshoot clipped


def test_tall_thin_stroke_stays_tall_and_thin() -> None:
    image = Image.new("L", (100, 100), 255)
    ImageDraw.Draw(image).rectangle([45, 20, 54, 79], fill=0)  # a "1": 60 high, 10 wide
    out = canon(image)
    rows = np.flatnonzero(out.any(axis=1))
    cols = np.flatnonzero(out.any(axis=0))
    assert rows[-1] - rows[0] + 1 == 20
    assert cols[-1] - cols[0] + 1 == 3


def test_larger_drawings_of_the_same_digit_canonicalise_alike(reference: Floats) -> None:
    for scale in (2, 3, 4):
        out = canon(
            seven(size=(100 * scale, 100 * scale), at=(25 * scale, 15 * scale), scale=scale)
        )
        assert mean_abs(out, reference) < 4  # measured 1.7-2.3: the stroke width rounds


def test_images_above_work_size_are_reduced_first(reference: Floats) -> None:
    huge = seven(size=(3000, 3000), at=(800, 500), scale=25, fg=0, bg=255)
    assert grey_levels(huge, PARAMS.work_size).shape == (500, 500)
    assert mean_abs(canon(huge), reference) < 4  # measured 1.9


# --- step 6: centre of mass ----------------------------------------------------------------


def test_centre_by_mass_puts_the_mass_at_the_canvas_centre() -> None:
    digit = np.zeros((20, 12), dtype=np.float32)
    digit[2:6, 1:11] = 200
    digit[6:20, 7:10] = 255
    canvas = centre_by_mass(digit, (28, 28))
    assert canvas.shape == (28, 28)
    assert float(canvas.sum()) == pytest.approx(float(digit.sum()))  # nothing cut
    assert np.allclose(centre_of_mass(canvas.astype(np.float64)), (14, 14), atol=0.5)


def test_centre_by_mass_of_an_empty_or_oversized_digit() -> None:
    assert not centre_by_mass(np.zeros((20, 20), dtype=np.float32), (28, 28)).any()
    big = np.ones((40, 40), dtype=np.float32)
    np.testing.assert_array_equal(centre_by_mass(big, (28, 28)), np.ones((28, 28)))


@pytest.mark.parametrize(
    "draw",
    [
        lambda d: d.ellipse([20, 30, 70, 60], outline=0, width=8),  # a flat "0"
        lambda d: d.line([10, 10, 90, 85], fill=0, width=6),  # a diagonal
        lambda d: d.polygon([(60, 10), (90, 90), (65, 70)], fill=0),  # a wedge
        lambda d: (d.line([15, 80, 40, 80], fill=0, width=5), d.ellipse([30, 20, 80, 50], fill=0)),
    ],
    ids=["ring", "diagonal", "wedge", "lopsided"],
)
def test_output_centre_of_mass_is_the_canvas_centre(
    draw: Callable[[ImageDraw.ImageDraw], object],
) -> None:
    image = Image.new("L", (100, 100), 245)
    draw(ImageDraw.Draw(image))
    out = canon(image)
    # whole-pixel shift: up to half a pixel off, plus a hair for the uint8 rounding
    assert np.allclose(centre_of_mass(out), (14, 14), atol=0.51)


# --- the whole function --------------------------------------------------------------------


def test_output_is_the_canvas_of_the_requested_size() -> None:
    out = canonicalise_digit(seven(fg=0, bg=255), PARAMS, (32, 24))
    assert out.shape == (32, 24, 1)
    assert out.dtype == np.uint8
    assert out.max() == 255 and out.min() == 0


@pytest.mark.parametrize(
    "image",
    [
        Image.new("L", (50, 50), 0),
        Image.new("L", (50, 50), 255),
        Image.new("L", (50, 50), 128),
        Image.new("RGB", (64, 48), (200, 180, 150)),
    ],
    ids=["black", "white", "grey", "tinted-rgb"],
)
def test_a_blank_image_has_no_ink(image: Image.Image) -> None:
    with pytest.raises(NoInk, match="no ink"):
        canon(image)


def test_one_hot_pixel_is_not_ink() -> None:
    image = Image.new("L", (50, 50), 0)
    image.putpixel((20, 20), 255)
    with pytest.raises(NoInk, match="no ink"):
        canon(image)


def test_a_small_dot_is_ink_and_is_centred() -> None:
    image = Image.new("L", (50, 50), 255)
    ImageDraw.Draw(image).rectangle([10, 30, 12, 32], fill=0)  # 3 x 3, near a corner
    out = canon(image)
    assert np.count_nonzero(out) == 400  # scaled up to fill the 20 x 20 box
    assert np.allclose(centre_of_mass(out), (14, 14), atol=0.5)


def test_real_mnist_digits_are_nearly_unchanged(mnist: ImageDataset) -> None:
    """MNIST's own digits are already canonical: a second pass moves them very little."""
    diffs = np.array(
        [
            mean_abs(canon(Image.fromarray(img[:, :, 0], mode="L")), img[:, :, 0].astype(float))
            for img in mnist.test_images
        ]
    )
    assert len(diffs) == 1000
    assert diffs.mean() < 2  # measured 1.06
    assert np.median(diffs) < 1  # measured 0.60


# --- the manifest and image_to_pixels ------------------------------------------------------


def canonical_spec(**changes: object) -> ImagePreprocessing:
    fields: dict[str, object] = {
        "color": "L",
        "size": (28, 28),
        "scale": 1 / 255,
        "mean": [0.1307],
        "std": [0.3081],
        "canonical": {"box": 20},
    }
    fields.update(changes)
    return ImagePreprocessing.model_validate(fields)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"color": "RGB", "mean": [0.5] * 3, "std": [0.25] * 3}, "color must be L"),
        ({"canonical": {"box": 29}}, "does not fit"),
        ({"size": (28, 16)}, "does not fit"),
        ({"invert": True}, "invert must be false"),
        ({"canonical": {"noise_floor": 1.0}}, "noise_floor"),
        ({"canonical": {"work_size": 16}}, "work_size"),
    ],
)
def test_manifest_refuses_canonical_settings_that_cannot_work(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        canonical_spec(**changes)


def test_image_to_pixels_canonicalises_when_the_manifest_says_so() -> None:
    spec = canonical_spec()
    assert spec.canonical is not None
    image = seven(fg=0, bg=255).convert("RGB")
    pixels = image_to_pixels(image, spec)
    assert pixels.shape == (28, 28, 1)
    assert pixels.dtype == np.uint8
    np.testing.assert_array_equal(pixels, canonicalise_digit(image, spec.canonical, SIZE))
    with pytest.raises(NoInk):
        image_to_pixels(Image.new("L", (40, 40), 255), spec)


@pytest.mark.parametrize("ink", [(0, 0, 0), (255, 255, 255), (30, 60, 200)], ids=str)
def test_a_digit_drawn_on_a_transparent_canvas_is_read_whatever_its_ink(
    ink: tuple[int, int, int],
) -> None:
    # A browser canvas exports strokes on transparent pixels: composited onto black, a black
    # stroke would vanish. Against a matte that contrasts with the strokes it is always read.
    drawing = Image.new("RGBA", (200, 200), (0, 0, 0, 0))
    ImageDraw.Draw(drawing).line([(60, 40), (140, 40), (90, 170)], fill=(*ink, 255), width=14)
    spec = ImagePreprocessing(
        color="L", size=(28, 28), scale=1 / 255, mean=[0.1], std=[0.3], canonical=PARAMS
    )
    pixels = image_to_pixels(drawing, spec)
    assert pixels.max() == 255 and pixels[0].max() == 0  # ink, bright on a black border
