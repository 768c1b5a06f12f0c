"""Every client mistake gets a 4xx in the one JSON error shape, never a 500 or a traceback, and
the server stays ready."""

import base64
import io
from collections.abc import Callable

import httpx
import pytest
from PIL import Image

from tests.helpers import ROOT, Server

SEVEN = (ROOT / "examples" / "digits" / "7.png").read_bytes()


def bomb() -> bytes:
    """A 7000x7000 PNG of zeros: a few KB of file, 49 megapixels when decoded."""
    buffer = io.BytesIO()
    Image.new("1", (7000, 7000)).save(buffer, format="PNG")
    return buffer.getvalue()


def post_image(data: bytes, **fields: str) -> Callable[[str], httpx.Response]:
    return lambda url: httpx.post(
        f"{url}/predict", files={"image": ("x.png", data)}, data=fields, timeout=30
    )


CASES: list[tuple[str, Callable[[str], httpx.Response], int, str]] = [
    ("undecodable", post_image(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50), 400, "could not be decoded"),
    ("truncated", post_image(SEVEN[: len(SEVEN) // 2]), 400, "could not be decoded"),
    ("empty", post_image(b""), 400, "empty"),
    ("svg", post_image(b"<svg xmlns='http://www.w3.org/2000/svg'/>"), 415, "unsupported"),
    ("pdf", post_image(b"%PDF-1.4\n"), 415, "unsupported"),
    ("bomb", post_image(bomb()), 413, "more pixels"),
    (
        "too large",
        lambda url: httpx.post(f"{url}/predict", files={"image": b"\0" * 11_000_000}, timeout=30),
        413,
        "upload limit",
    ),
    ("unknown model", post_image(SEVEN, model="nope"), 404, "not loaded"),
    ("traversal model", post_image(SEVEN, model="../../etc/passwd"), 404, "not loaded"),
    ("unknown version", post_image(SEVEN, version="9"), 404, "no version 9"),
    ("version zero", post_image(SEVEN, version="0"), 422, "validation"),
    ("top_k zero", post_image(SEVEN, top_k="0"), 422, "validation"),
    ("top_k too big", post_image(SEVEN, top_k="11"), 422, "top_k"),
    ("top_k not a number", post_image(SEVEN, top_k="three"), 422, "validation"),
    (
        "no image",
        lambda url: httpx.post(f"{url}/predict", data={"model": "digits-cnn"}),
        422,
        "validation",
    ),
    (
        "two images",
        lambda url: httpx.post(f"{url}/predict", files=[("image", SEVEN), ("image", SEVEN)]),
        400,
        "exactly one",
    ),
    (
        "bad base64",
        lambda url: httpx.post(f"{url}/predict/json", json={"image_base64": "!!"}),
        400,
        "base64",
    ),
    (
        "base64 of text",
        lambda url: httpx.post(
            f"{url}/predict/json", json={"image_base64": base64.b64encode(b"hello").decode()}
        ),
        415,
        "unsupported",
    ),
    (
        "json not json",
        lambda url: httpx.post(
            f"{url}/predict/json", content=b"{oops", headers={"content-type": "application/json"}
        ),
        422,
        "validation",
    ),
    (
        "json missing field",
        lambda url: httpx.post(f"{url}/predict/json", json={"top_k": 1}),
        422,
        "validation",
    ),
    (
        "json extra field",
        lambda url: httpx.post(f"{url}/predict/json", json={"image_base64": "aGk=", "x": 1}),
        422,
        "validation",
    ),
    (
        "batch too many",
        lambda url: httpx.post(f"{url}/predict/batch", files=[("images", SEVEN)] * 65),
        413,
        "at most 64",
    ),
    (
        "batch one bad",
        lambda url: httpx.post(
            f"{url}/predict/batch", files=[("images", SEVEN), ("images", b"junk")]
        ),
        415,
        "unsupported",
    ),
    ("unknown path", lambda url: httpx.get(f"{url}/nope"), 404, "no endpoint"),
    ("newline in path", lambda url: httpx.get(f"{url}/models%0A"), 404, "no endpoint"),
    (
        "tab in path",
        lambda url: httpx.post(f"{url}/predict%09", files={"image": SEVEN}),
        404,
        "no endpoint",
    ),
    ("wrong method", lambda url: httpx.get(f"{url}/predict"), 405, "method not allowed"),
]


@pytest.mark.parametrize(("name", "call", "status", "message"), CASES, ids=[c[0] for c in CASES])
def test_client_errors(
    server: Server, name: str, call: Callable[[str], httpx.Response], status: int, message: str
) -> None:
    r = call(server.url)
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "detail"}
    assert message in body["error"] or message in str(body["detail"])
    assert "Traceback" not in r.text


def test_named_fields_in_validation_errors(server: Server) -> None:
    detail = post_image(SEVEN, top_k="0")(server.url).json()["detail"]
    assert detail[0]["field"] == "top_k"
    detail = httpx.post(f"{server.url}/predict/json", json={"top_k": 1}).json()["detail"]
    assert detail[0]["field"] == "image_base64"


def test_batch_error_names_the_image(server: Server) -> None:
    r = httpx.post(
        f"{server.url}/predict/batch",
        files=[("images", ("a.png", SEVEN)), ("images", ("b.png", b"junk"))],
    )
    assert r.json()["detail"]["image"] == 1 and r.json()["detail"]["filename"] == "b.png"


def test_server_stays_ready_and_logs_no_tracebacks(server: Server) -> None:
    for _, call, _, _ in CASES:
        call(server.url)
    assert httpx.get(f"{server.url}/readyz").status_code == 200
    assert httpx.post(f"{server.url}/predict", files={"image": SEVEN}).status_code == 200
    log = server.log()
    assert "Traceback" not in log, log[-3000:]
    assert "rejected POST /predict: 415" in log
