"""POST /explain and /explain/text against a real server: what the model saw, its activations,
filters and occlusion map, agreeing with /predict and offline onnxruntime; and its errors."""

import base64
import io
import math

import httpx
import numpy as np
import pytest
from PIL import Image

from modelrepo.layout import ModelVersion, list_versions, open_version
from modelrepo.preprocess import image_to_pixels
from modelrepo.text import tokenize
from service.core.explain import occlusion_geometry, positions
from tests.helpers import EXPORTS, ROOT, Server, png_bytes

EXAMPLES = ROOT / "examples" / "mnist"
UPLOADS = ["7.png", "7-photo.jpg", "7-scan.png", "3.png", "0.png"]


def latest(name: str) -> ModelVersion:
    return open_version(EXPORTS, name, list_versions(EXPORTS, name)[-1])


def picture(data: str) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(data))) as image:
        assert image.format == "PNG"
        return np.asarray(image)


def tiled_size(n: int, h: int, w: int) -> tuple[int, int]:
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    return rows * h + rows - 1, cols * w + cols - 1


def explain(server: Server, data: bytes, **fields: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/explain", files={"image": ("upload", data)}, data=fields, timeout=60
    )


@pytest.mark.parametrize("upload", UPLOADS)
def test_explain_shows_what_the_default_model_saw(server: Server, upload: str) -> None:
    data = (EXAMPLES / upload).read_bytes()
    version = latest("mnist-cnn")
    manifest, spec = version.manifest, version.manifest.image_preprocessing
    r = explain(server, data)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["model"], body["version"]) == ("mnist-cnn", manifest.version)

    predicted = httpx.post(f"{server.url}/predict", files={"image": data}, timeout=30).json()
    labels = [p["label"] for p in predicted["predictions"]]
    assert [p["label"] for p in body["predictions"]] == labels
    for mine, theirs in zip(body["predictions"], predicted["predictions"], strict=True):
        assert mine["probability"] == pytest.approx(theirs["probability"], abs=1e-5)

    with Image.open(io.BytesIO(data)) as image:
        offline = image_to_pixels(image, spec)[..., 0]  # the canonical digit, (28, 28)
    assert (picture(body["input_png"]) == offline).all()

    # The bundled CNN carries its explain outputs: one picture per convolution block.
    assert manifest.explain is not None and manifest.explain.filters is not None
    layers = [(a.layer, a.shape) for a in manifest.explain.activations]
    assert [(a["layer"], a["shape"]) for a in body["activations"]] == layers
    assert len(layers) == 2  # mnist-cnn: two conv blocks
    for activation in body["activations"]:
        grid = picture(activation["png"])
        assert grid.shape == tiled_size(*activation["shape"])
        assert grid.dtype == np.uint8 and grid.max() == 255
    filters = picture(body["filters_png"])
    out_channels, _, kh, kw = manifest.explain.filters.shape
    assert filters.shape == tiled_size(out_channels, kh, kw)

    patch, stride = occlusion_geometry(spec.size)
    occlusion = body["occlusion"]
    assert (occlusion["patch"], occlusion["stride"]) == (patch, stride)
    n = positions(spec.size[0], patch, stride)
    grid = np.array(occlusion["grid"])
    assert grid.shape == (n, n)
    assert (grid >= -1).all() and (grid <= 1).all()
    assert grid.max() > 0, "masking some part of a digit must lower the top class's probability"
    assert picture(occlusion["png"]).shape == (*spec.size, 3)


def test_a_model_without_convolutions_gets_occlusion_only(server: Server) -> None:
    r = explain(server, (EXAMPLES / "7.png").read_bytes(), model="mnist-lstm")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["activations"] == [] and body["filters_png"] is None
    assert body["predictions"][0]["label"] == "7"
    assert np.array(body["occlusion"]["grid"]).shape == (8, 8)


def test_the_8x8_digits_model_is_explained_at_its_own_size(server: Server) -> None:
    data = (ROOT / "examples" / "digits" / "7.png").read_bytes()
    r = explain(server, data, model="digits-cnn", top_k="10")
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["predictions"]) == 10
    assert picture(body["input_png"]).shape == (8, 8)
    assert np.array(body["occlusion"]["grid"]).shape == (7, 7)  # patch 2, stride 1
    assert picture(body["occlusion"]["png"]).shape == (8, 8, 3)


def test_explain_text_gives_each_tokens_drop(server: Server) -> None:
    text = "the striker scored twice in the second half of the match"
    r = httpx.post(f"{server.url}/explain/text", json={"text": text}, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    spec = latest("text-topics").manifest.text_preprocessing
    assert [t["token"] for t in body["tokens"]] == tokenize(text, spec)[: spec.max_length]
    assert all(t["part"] == "text" and -1 <= t["drop"] <= 1 for t in body["tokens"])
    predicted = httpx.post(f"{server.url}/predict/text", json={"text": text}, timeout=30).json()
    assert body["predictions"][0]["label"] == predicted["predictions"][0]["label"]
    assert body["predictions"][0]["probability"] == pytest.approx(
        predicted["predictions"][0]["probability"], abs=1e-5
    )


def test_explain_requests_are_counted_under_their_endpoint(server: Server) -> None:
    assert explain(server, (EXAMPLES / "7.png").read_bytes()).status_code == 200
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    lines = [
        line
        for line in metrics.splitlines()
        if line.startswith("digitserve_requests_total{") and 'endpoint="/explain"' in line
    ]
    assert any('outcome="ok"' in line and 'model="mnist-cnn"' in line for line in lines), lines


BLANK = png_bytes(np.full((28, 28, 1), 255, np.uint8))
SEVEN = (EXAMPLES / "7.png").read_bytes()


@pytest.mark.parametrize(
    ("files", "fields", "status", "says"),
    [
        ({"picture": SEVEN}, {}, 422, "image"),
        ({"image": b""}, {}, 400, "empty"),
        ({"image": b"just some text, not an image"}, {}, 415, "unsupported"),
        ({"image": BLANK}, {}, 422, "ink"),
        ({"image": SEVEN}, {"model": "text-topics"}, 422, "/explain/text"),
        ({"image": SEVEN}, {"model": "nope"}, 404, "nope"),
        ({"image": SEVEN}, {"version": "99"}, 404, "version"),
        ({"image": SEVEN}, {"top_k": "0"}, 422, "top_k"),
        ({"image": SEVEN}, {"top_k": "11"}, 422, "top_k"),
    ],
)
def test_explain_errors_are_the_clients_not_the_servers(
    server: Server, files: dict[str, bytes], fields: dict[str, str], status: int, says: str
) -> None:
    r = httpx.post(f"{server.url}/explain", files=files, data=fields, timeout=30)
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "detail"}
    assert says in (body["error"] + str(body["detail"])).lower() or says in r.text


def test_explain_errors_for_bodies_of_the_wrong_kind_or_size(server: Server) -> None:
    r = httpx.post(f"{server.url}/explain", json={"image": "x"}, timeout=30)
    assert r.status_code == 415, r.text
    big = httpx.post(
        f"{server.url}/explain", files={"image": b"\x89PNG" + bytes(11 * 1024 * 1024)}, timeout=60
    )
    assert big.status_code == 413, big.text
    two = httpx.post(
        f"{server.url}/explain", files=[("image", SEVEN), ("image", SEVEN)], timeout=30
    )
    assert two.status_code == 400, two.text
    assert httpx.get(f"{server.url}/explain", timeout=10).status_code == 405
    text = httpx.post(
        f"{server.url}/explain/text", json={"text": "hi", "model": "mnist-cnn"}, timeout=30
    )
    assert text.status_code == 422 and "/explain" in text.json()["error"], text.text
    empty = httpx.post(f"{server.url}/explain/text", json={"text": "   "}, timeout=30)
    assert empty.status_code == 422, empty.text
    form = httpx.post(f"{server.url}/explain/text", data={"text": "hi"}, timeout=30)
    assert form.status_code == 415, form.text
