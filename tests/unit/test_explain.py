"""The pictures /explain draws and the inputs it builds: shapes, value ranges, geometry."""

import base64
import io

import numpy as np
import pytest
from PIL import Image

from modelrepo.manifest import ImagePreprocessing
from modelrepo.preprocess import pixels_to_input
from service.core import pictures
from service.core.admission import Overloaded
from service.core.explain import (
    ExplainGate,
    occluded_copies,
    occlusion_geometry,
    positions,
    token_removals,
)


def decode_png(data: str) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(data))) as image:
        assert image.format == "PNG"
        return np.asarray(image)


def test_scale_each_stretches_every_map_on_its_own_and_leaves_flat_maps_black() -> None:
    maps = np.stack([np.arange(4.0).reshape(2, 2), np.full((2, 2), 7.0), -np.eye(2) * 1e-3])
    out = pictures.scale_each(maps)
    assert out.dtype == np.uint8 and out.shape == maps.shape
    assert out[0].min() == 0 and out[0].max() == 255
    assert (out[1] == 0).all()  # flat: no pattern to show
    assert out[2].min() == 0 and out[2].max() == 255  # tiny values stretched all the same


@pytest.mark.parametrize(("n", "expected"), [(1, (1, 1)), (10, (3, 4)), (32, (6, 6)), (64, (8, 8))])
def test_grid_shape_is_near_square_and_holds_every_tile(n: int, expected: tuple[int, int]) -> None:
    rows, cols = pictures.grid_shape(n)
    assert (rows, cols) == expected
    assert rows * cols >= n and cols >= rows


def test_tile_places_tiles_row_by_row_with_grey_gaps() -> None:
    tiles = np.stack([np.full((3, 2), v, np.uint8) for v in (10, 20, 30)])  # 3 tiles of 3x2
    out = pictures.tile(tiles)  # 2 rows x 2 cols
    assert out.shape == (3 * 2 + 1, 2 * 2 + 1)
    assert (out[0:3, 0:2] == 10).all() and (out[0:3, 3:5] == 20).all()
    assert (out[4:7, 0:2] == 30).all()
    assert (out[3, :] == pictures.GRID_GAP_LEVEL).all()  # the gap between the rows
    assert (out[4:7, 3:5] == pictures.GRID_GAP_LEVEL).all()  # the unused slot


def test_channel_grid_of_a_conv_block() -> None:
    rng = np.random.default_rng(0)
    out = pictures.channel_grid(rng.normal(size=(32, 28, 28)).astype(np.float32))
    assert out.shape == (6 * 28 + 5, 6 * 28 + 5) and out.dtype == np.uint8
    assert out.min() == 0 and out.max() == 255


def test_filter_grid_is_grey_for_one_input_channel_and_colour_for_three() -> None:
    rng = np.random.default_rng(1)
    grey = pictures.filter_grid(rng.normal(size=(32, 1, 5, 5)))
    assert grey.shape == (6 * 5 + 5, 6 * 5 + 5)
    colour = pictures.filter_grid(rng.normal(size=(16, 3, 3, 3)))
    assert colour.shape == (4 * 3 + 3, 4 * 3 + 3, 3)


def test_seen_input_undoes_exactly_the_scaling_and_standardisation() -> None:
    spec = ImagePreprocessing(color="L", size=(4, 4), scale=1 / 255, mean=[0.13], std=[0.31])
    pixels = np.arange(0, 256, 16, dtype=np.uint8).reshape(1, 4, 4, 1)
    x = pixels_to_input(pixels, spec)[0]
    assert (pictures.seen_input(x, spec) == pixels[0, :, :, 0]).all()
    rgb = ImagePreprocessing(
        color="RGB", size=(2, 2), scale=1 / 255, mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3]
    )
    pixels = np.random.default_rng(2).integers(0, 256, (1, 2, 2, 3), dtype=np.uint8)
    assert (pictures.seen_input(pixels_to_input(pixels, rgb)[0], rgb) == pixels[0]).all()


def test_occlusion_map_averages_the_patches_covering_each_pixel() -> None:
    drops = np.array([[1.0, 0.0], [0.0, 0.5]])
    heat = pictures.occlusion_map(drops, (3, 3), patch=2, stride=1)
    assert heat.shape == (3, 3)
    assert heat[0, 0] == 1.0  # only the first patch covers it
    assert heat[1, 1] == pytest.approx(1.5 / 4)  # all four do
    assert heat[2, 2] == 0.5


def test_heat_overlay_is_rgb_red_for_a_drop_blue_for_a_rise() -> None:
    picture = np.zeros((2, 2), np.uint8)
    heat = np.array([[0.8, 0.0], [-0.8, 0.0]])
    out = pictures.heat_overlay(picture, heat)
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    red, still, blue = out[0, 0], out[0, 1], out[1, 0]
    assert red[0] > 200 and red[2] == 0
    assert blue[2] > 200 and blue[0] == 0
    assert (still == 0).all()
    faint = pictures.heat_overlay(picture, np.full((2, 2), 0.001))  # tiny drops stay faint
    assert faint[..., 0].max() < 255 * 0.2


def test_png_base64_round_trips_grey_and_rgb() -> None:
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert (decode_png(pictures.png_base64(grey)) == grey).all()
    rgb = np.arange(36, dtype=np.uint8).reshape(3, 4, 3)
    assert (decode_png(pictures.png_base64(rgb)) == rgb).all()


@pytest.mark.parametrize(
    ("size", "patch", "stride", "grid"),
    [((28, 28), 7, 3, 8), ((8, 8), 2, 1, 7), ((32, 32), 8, 4, 7), ((3, 3), 1, 1, 3)],
)
def test_occlusion_geometry_covers_the_input(
    size: tuple[int, int], patch: int, stride: int, grid: int
) -> None:
    assert occlusion_geometry(size) == (patch, stride)
    n = positions(size[0], patch, stride)
    assert n == grid
    assert (n - 1) * stride + patch > size[0] - stride  # the last patch reaches near the edge


def test_occluded_copies_mask_one_patch_each_with_the_fill() -> None:
    x = np.ones((2, 6, 6), np.float32)
    fill = np.array([-1.0, -2.0], np.float32)
    copies = occluded_copies(x, patch=2, stride=2, fill=fill)
    assert copies.shape == (9, 2, 6, 6)
    assert (copies[0, 0, :2, :2] == -1).all() and (copies[0, 1, :2, :2] == -2).all()
    assert (copies[4, :, 2:4, 2:4] == fill[:, None, None]).all()  # the middle patch
    changed = (copies != x[None]).reshape(9, -1).sum(axis=1)
    assert (changed == 2 * 2 * 2).all()  # each copy masks exactly one patch, every channel
    assert (x == 1).all()  # the input itself is untouched


def test_token_removals_shift_the_rest_up_and_pad() -> None:
    ids = np.array([5, 6, 2, 7, 0, 0], np.int64)  # "a b <sep> c" padded
    out = token_removals(ids, [0, 1, 3], pad_id=0)
    assert out.tolist() == [[6, 2, 7, 0, 0, 0], [5, 2, 7, 0, 0, 0], [5, 6, 2, 0, 0, 0]]


def test_explain_gate_refuses_past_its_limit_and_frees_its_places() -> None:
    gate = ExplainGate(limit=2)
    with gate.enter(), gate.enter():
        with pytest.raises(Overloaded) as refused, gate.enter():
            pass
        assert refused.value.status == 503
        assert refused.value.reason == "explain_busy"
        assert "Retry-After" in refused.value.headers()
    assert gate.running == 0
    with gate.enter():
        assert gate.running == 1
