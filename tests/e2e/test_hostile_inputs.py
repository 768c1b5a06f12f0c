"""A corpus of hostile requests to every endpoint of a real server: each one gets the 4xx it
deserves in the one JSON error shape (or, for an odd but valid image, a 200 with a
prediction), never a 5xx or a traceback, and the server is still ready and right afterwards.

CASES has one row per request: (id, "METHOD /path", how it is sent, the statuses allowed).
Adding a case is adding a row. Every image is built here in memory: the decompression bombs
are a few dozen bytes that declare billions of pixels, never a big file.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.helpers import ROOT, Server

SEVEN = (ROOT / "examples" / "digits" / "7.png").read_bytes()
UPLOAD_LIMIT = 10 * 1024 * 1024  # the service's default DIGITSERVE_MAX_UPLOAD_BYTES
API_PATHS = ("/predict", "/predict/batch", "/predict/json", "/models", "/livez", "/readyz")
BENTOML_PATHS = ("/metrics", "/healthz")  # BentoML's own routes, mounted beside the API

Send = dict[str, Any]  # keyword arguments of httpx.Client.request


# ---------------------------------------------------------------------------------------------
# Images: odd but valid ones, and hostile ones


def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def digit(mode: str = "L") -> Image.Image:
    """The bundled 7 (8x8 grey), converted to `mode`."""
    with Image.open(io.BytesIO(SEVEN)) as image:
        return image.convert(mode)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int) -> bytes:
    """A 1-bit grey PNG whose header declares width x height, with one compressed row of
    zeros: a few dozen bytes on the wire, width x height pixels if anything decoded it."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = bytes(1 + min(4096, (width + 7) // 8))
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(row, 9))
        + png_chunk(b"IEND", b"")
    )


def gif_declaring(width: int, height: int) -> bytes:
    """A GIF89a whose screen and only frame are width x height: a 2-colour palette and an LZW
    stream of one clear code and the end code."""
    screen = struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    frame = b"," + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x4c\x01\x00"
    return b"GIF89a" + screen + frame + b";"


def jpeg_declaring(width: int, height: int) -> bytes:
    """A real baseline JPEG of the 7 with the dimensions in its SOF0 segment rewritten."""
    data = bytearray(encode(digit(), "JPEG", quality=90))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def animated_gif() -> bytes:
    frames = [digit(), Image.new("L", (8, 8), 255), Image.new("L", (8, 8), 0)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)


def with_garbage_exif_png(png: bytes) -> bytes:
    """The PNG with an eXIf chunk that holds no TIFF header, before its IEND."""
    return png[:-12] + png_chunk(b"eXIf", b"garbage, not a TIFF header") + png[-12:]


def with_garbage_exif_jpeg(jpeg: bytes) -> bytes:
    """The JPEG with an APP1 Exif segment that holds no TIFF header, after its SOI."""
    app1 = b"Exif\x00\x00garbage, not a TIFF header"
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:]


PNG = SEVEN
JPEG = encode(digit(), "JPEG", quality=95)
TRUNCATED_PNG = PNG[: len(PNG) // 2]
TRUNCATED_JPEG = JPEG[: len(JPEG) // 2]
CMYK_JPEG = encode(digit("CMYK"), "JPEG", quality=95)
PNG_16_BIT = encode(Image.fromarray(np.asarray(digit(), dtype=np.uint16) * 257), "PNG")
PALETTE_PNG = encode(digit("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=16), "PNG")
ALPHA_PNG = encode(digit("RGBA"), "PNG")
GREY_ALPHA_PNG = encode(digit("LA"), "PNG")
INTERLACED_PNG = encode(digit(), "PNG", interlace=1)
PROGRESSIVE_JPEG = encode(digit("RGB"), "JPEG", progressive=True, quality=90)
BMP = encode(digit(), "BMP")
WEBP = encode(digit("RGB"), "WEBP", lossless=True)
ANIMATED_GIF = animated_gif()
WIDE_PNG = encode(Image.new("L", (100_000, 1), 0), "PNG")  # 100k pixels: under the limit
BOMB_PNG = png_declaring(50_000, 50_000)  # 2.5 gigapixels in 73 bytes
BOMB_GIF = gif_declaring(50_000, 50_000)
BOMB_JPEG = jpeg_declaring(65_000, 65_000)
LARGEST_PNG = png_declaring(2**31 - 1, 2**31 - 1)  # the most a PNG header can declare
ZERO_PNG = png_declaring(0, 0)
WRONG_MAGIC = b"\x89PNX\r\n\x1a\n" + PNG[8:]  # a PNG with one byte of its signature changed
JPEG_MAGIC_PNG_BODY = b"\xff\xd8\xff" + PNG[8:]  # claims JPEG, is not
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><rect width="8"/></svg>'
PDF = b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"
HTML = b"<!doctype html><script>alert(1)</script>"
ZIP = b"PK\x03\x04" + bytes(26)
ELF = b"\x7fELF\x02\x01\x01" + bytes(57)


# ---------------------------------------------------------------------------------------------
# How a case is sent


def form(*images: bytes, field: str = "image", **fields: str) -> Send:
    """multipart/form-data: each image a file part named `field`, and text fields."""
    return {"files": [(field, (f"{i}.img", data)) for i, data in enumerate(images)], "data": fields}


def batch(*images: bytes, **fields: str) -> Send:
    return form(*images, field="images", **fields)


def raw(content: bytes | list[bytes], content_type: str | None) -> Send:
    """These bytes as the body; a list of chunks goes out chunked, without Content-Length."""
    return {"content": content, "headers": {"content-type": content_type} if content_type else {}}


def as_json(body: Any) -> Send:
    return raw(json.dumps(body).encode(), "application/json")


def json_bytes(body: bytes | list[bytes]) -> Send:
    return raw(body, "application/json")


def b64(image: bytes, **fields: Any) -> Send:
    return as_json({"image_base64": base64.b64encode(image).decode(), **fields})


BOUNDARY = "hostile-boundary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"
NO_BOUNDARY = "multipart/form-data"


def multipart(*parts: tuple[str, bytes], boundary: str = BOUNDARY) -> bytes:
    """A hand-made multipart body: (Content-Disposition parameters, payload) per part."""
    body = b"".join(
        f"--{boundary}\r\nContent-Disposition: form-data; {disposition}\r\n\r\n".encode()
        + payload
        + b"\r\n"
        for disposition, payload in parts
    )
    return body + f"--{boundary}--\r\n".encode()


def parts(*parts: tuple[str, bytes], content_type: str = MULTIPART, **options: str) -> Send:
    return raw(multipart(*parts, **options), content_type)


IMAGE_PART = ('name="image"; filename="7.png"', PNG)
EMPTY_BOUNDARY = raw(multipart(IMAGE_PART, boundary=""), "multipart/form-data; boundary=")
LONG_BOUNDARY = parts(
    IMAGE_PART, boundary="b" * 71, content_type=f"{NO_BOUNDARY}; boundary={'b' * 71}"
)
HUGE = "x" * (2 * 1024 * 1024)  # over Starlette's 1 MiB limit on a text part
HUGE_VALUE = ('name="model"', HUGE.encode())
HUGE_NAME = ('name="' + HUGE[:100_000] + '"', b"1")
HUGE_FILENAME = ('name="images"; filename="' + HUGE[:100_000] + '"', PNG)
MANY_FIELDS = [('name="f"', b"1")] * 200  # Starlette's limit is 100 (max_fields)
DEEP_JSON = b"[" * 10_000 + b"]" * 10_000
DEEP_IN_FIELD = b'{"image_base64": ' + DEEP_JSON + b"}"
OVERSIZED_JSON = b'{"image_base64": "' + b"A" * (UPLOAD_LIMIT + 1024) + b'"}'
MEBIBYTE = b"A" * (1024 * 1024)
CHUNKED_JSON = [b'{"image_base64": "', *[MEBIBYTE] * 11, b'"}']
# A well-formed form whose image part is 11 MiB, sent in chunks without a Content-Length.
CHUNKED_FORM = [
    multipart(('name="image"; filename="big.png"', b"")).rsplit(b"\r\n--", 1)[0],
    *[MEBIBYTE] * 11,
    f"\r\n--{BOUNDARY}--\r\n".encode(),
]
SEVEN_B64 = base64.b64encode(PNG).decode()
DATA_URL = "data:image/png;base64," + SEVEN_B64
NAN = b'{"image_base64": "aGk=", "top_k": NaN}'  # Python's json reads NaN and Infinity
INFINITY = b'{"image_base64": "aGk=", "version": Infinity}'
E999 = b'{"image_base64": "aGk=", "top_k": 1e999}'  # a float overflowing to inf
TEXT_JSON = b'{"image_base64": "aGk="}'
URLENCODED = "application/x-www-form-urlencoded"

E400, E404, E405, E413, E415, E422 = {400}, {404}, {405}, {413}, {415}, {422}
OK = {200}  # odd but valid images: a prediction

CASES: list[tuple[str, str, Send, set[int]]] = [
    # empty bodies
    ("predict-empty-body", "POST /predict", raw(b"", None), E415),
    ("predict-empty-multipart", "POST /predict", raw(b"", MULTIPART), E422),
    ("predict-empty-image", "POST /predict", form(b""), E400),
    ("batch-empty-body", "POST /predict/batch", raw(b"", None), E415),
    ("batch-empty-image", "POST /predict/batch", batch(PNG, b""), E400),
    ("json-empty-body", "POST /predict/json", json_bytes(b""), E422),
    ("json-empty-object", "POST /predict/json", as_json({}), E422),
    ("json-null", "POST /predict/json", as_json(None), E422),
    ("json-empty-image", "POST /predict/json", as_json({"image_base64": ""}), E422),
    # broken and disguised images
    ("truncated-png", "POST /predict", form(TRUNCATED_PNG), E400),
    ("truncated-jpeg", "POST /predict", form(TRUNCATED_JPEG), E400),
    ("truncated-jpeg-json", "POST /predict/json", b64(TRUNCATED_JPEG), E400),
    ("truncated-png-batch", "POST /predict/batch", batch(PNG, TRUNCATED_PNG), E400),
    ("wrong-magic", "POST /predict", form(WRONG_MAGIC), E415),
    ("jpeg-magic-png-body", "POST /predict", form(JPEG_MAGIC_PNG_BODY), E400),
    ("zero-size-png", "POST /predict", form(ZERO_PNG), E400),
    ("svg", "POST /predict", form(SVG), E415),
    ("pdf", "POST /predict", form(PDF), E415),
    ("pdf-json", "POST /predict/json", b64(PDF), E415),
    ("svg-batch", "POST /predict/batch", batch(SVG), E415),
    ("html", "POST /predict", form(HTML), E415),
    ("zip-batch", "POST /predict/batch", batch(ZIP), E415),
    ("elf-json", "POST /predict/json", b64(ELF), E415),
    # decompression bombs and huge dimensions: refused by the header, never decoded
    ("bomb-png-50000x50000", "POST /predict", form(BOMB_PNG), E413),
    ("bomb-gif-50000x50000", "POST /predict", form(BOMB_GIF), E413),
    ("bomb-jpeg-65000x65000", "POST /predict", form(BOMB_JPEG), E413),
    ("bomb-png-json", "POST /predict/json", b64(BOMB_PNG), E413),
    ("bomb-gif-batch", "POST /predict/batch", batch(PNG, BOMB_GIF), E413),
    ("largest-png-header", "POST /predict", form(LARGEST_PNG), E413),
    # odd but valid images: a prediction
    ("cmyk-jpeg", "POST /predict", form(CMYK_JPEG), OK),
    # unreadable EXIF: the orientation is ignored, the pixels are served
    ("garbage-exif-png", "POST /predict", form(with_garbage_exif_png(PNG)), OK),
    ("garbage-exif-jpeg", "POST /predict", form(with_garbage_exif_jpeg(JPEG)), OK),
    ("garbage-exif-png-json", "POST /predict/json", b64(with_garbage_exif_png(PNG)), OK),
    ("16-bit-png", "POST /predict", form(PNG_16_BIT), OK),
    ("palette-png", "POST /predict", form(PALETTE_PNG), OK),
    ("alpha-png", "POST /predict", form(ALPHA_PNG), OK),
    ("grey-alpha-png-json", "POST /predict/json", b64(GREY_ALPHA_PNG), OK),
    ("interlaced-png", "POST /predict", form(INTERLACED_PNG), OK),
    ("progressive-jpeg", "POST /predict", form(PROGRESSIVE_JPEG), OK),
    ("animated-gif", "POST /predict", form(ANIMATED_GIF), OK),
    ("bmp-json", "POST /predict/json", b64(BMP), OK),
    ("webp-json", "POST /predict/json", b64(WEBP), OK),
    ("100000x1-png", "POST /predict", form(WIDE_PNG), E422),  # blank: no ink for mnist-cnn
    ("odd-batch", "POST /predict/batch", batch(CMYK_JPEG, PNG_16_BIT, ANIMATED_GIF), OK),
    # the wrong kind of body, or the wrong content-type header
    ("predict-json-body", "POST /predict", as_json({"image": SEVEN_B64}), E415),
    ("predict-text-plain", "POST /predict", raw(PNG, "text/plain"), E415),
    ("predict-raw-png", "POST /predict", raw(PNG, "image/png"), E415),
    ("predict-urlencoded", "POST /predict", raw(b"image=abc&top_k=1", URLENCODED), E422),
    ("batch-json-body", "POST /predict/batch", as_json({"images": [SEVEN_B64]}), E415),
    ("json-sent-as-form", "POST /predict/json", form(PNG), E415),
    ("json-text-plain", "POST /predict/json", raw(TEXT_JSON, "text/plain"), E415),
    ("json-no-content-type", "POST /predict/json", raw(TEXT_JSON, None), E415),
    ("json-not-an-object", "POST /predict/json", as_json([1, 2, 3]), E422),
    ("json-image-not-string", "POST /predict/json", as_json({"image_base64": 7}), E422),
    ("json-image-null", "POST /predict/json", as_json({"image_base64": None}), E422),
    ("json-unknown-field", "POST /predict/json", as_json({"image_base64": "aGk=", "x": 1}), E422),
    ("json-huge-key", "POST /predict/json", as_json({"image_base64": "aGk=", HUGE: 1}), E422),
    # multipart that is not what it claims, and wrong or missing form fields
    ("multipart-no-boundary", "POST /predict", parts(IMAGE_PART, content_type=NO_BOUNDARY), E400),
    ("multipart-wrong-boundary", "POST /predict", parts(IMAGE_PART, boundary="other"), E400),
    ("multipart-empty-boundary", "POST /predict", EMPTY_BOUNDARY, E400),
    ("multipart-71-char-boundary", "POST /predict", LONG_BOUNDARY, E400),
    ("multipart-unterminated", "POST /predict", raw(multipart(IMAGE_PART)[:-20], MULTIPART), E422),
    ("multipart-garbage", "POST /predict/batch", raw(b"\x00\xff" * 512, MULTIPART), E400),
    ("multipart-huge-value", "POST /predict", parts(IMAGE_PART, HUGE_VALUE), E400),
    ("multipart-huge-name", "POST /predict", parts(IMAGE_PART, HUGE_NAME), E400),
    ("multipart-huge-filename", "POST /predict/batch", parts(HUGE_FILENAME), E400),
    ("multipart-too-many-fields", "POST /predict", parts(IMAGE_PART, *MANY_FIELDS), E400),
    ("model-65-chars", "POST /predict", form(PNG, model="m" * 65), E422),
    ("image-as-text-field", "POST /predict", {"data": {"image": "not a file"}}, E422),
    ("images-as-text-field", "POST /predict/batch", {"data": {"images": "x"}}, E422),
    ("image-field-misnamed", "POST /predict", {"files": {"picture": PNG}}, E422),
    ("images-field-misnamed", "POST /predict/batch", form(PNG), E422),
    ("two-images-to-predict", "POST /predict", form(PNG, PNG), E400),
    ("three-images-to-predict", "POST /predict", form(PNG, PNG, PNG), E400),
    ("65-images-to-batch", "POST /predict/batch", batch(*[PNG] * 65), E413),
    # base64 that is not
    ("base64-invalid", "POST /predict/json", as_json({"image_base64": "not base64!"}), E400),
    ("base64-bad-padding", "POST /predict/json", as_json({"image_base64": "iVBORw0KGgo"}), E400),
    ("base64-non-ascii", "POST /predict/json", as_json({"image_base64": "iVBOR\u00e9w0="}), E400),
    ("base64-data-url", "POST /predict/json", as_json({"image_base64": DATA_URL}), E400),
    # over the size limits, and nested too deep
    ("oversized-json", "POST /predict/json", json_bytes(OVERSIZED_JSON), E413),
    ("oversized-json-chunked", "POST /predict/json", json_bytes(CHUNKED_JSON), E413),
    ("oversized-form-chunked", "POST /predict", raw(CHUNKED_FORM, MULTIPART), E413),
    ("deep-json-10000", "POST /predict/json", json_bytes(DEEP_JSON), E400),
    ("deep-json-in-field", "POST /predict/json", json_bytes(DEEP_IN_FIELD), E400),
    ("invalid-json", "POST /predict/json", json_bytes(b'{"image_base64": '), E422),
    # NaN-like numbers, and top_k and version out of range
    ("json-NaN-literal", "POST /predict/json", json_bytes(NAN), E422),
    ("json-Infinity-literal", "POST /predict/json", json_bytes(INFINITY), E422),
    ("json-1e999-literal", "POST /predict/json", json_bytes(E999), E422),
    ("top_k-NaN", "POST /predict", form(PNG, top_k="NaN"), E422),
    ("top_k-Infinity", "POST /predict", form(PNG, top_k="Infinity"), E422),
    ("top_k-1e999", "POST /predict", form(PNG, top_k="1e999"), E422),
    ("top_k-empty", "POST /predict", form(PNG, top_k=""), E422),
    ("top_k-0", "POST /predict", form(PNG, top_k="0"), E422),
    ("top_k--1", "POST /predict/batch", batch(PNG, top_k="-1"), E422),
    ("top_k-11", "POST /predict/json", b64(PNG, top_k=11), E422),
    ("top_k-10**30", "POST /predict", form(PNG, top_k=str(10**30)), E422),
    ("top_k-10**30-json", "POST /predict/json", b64(PNG, top_k=10**30), E422),
    ("top_k-NaN-string-json", "POST /predict/json", b64(PNG, top_k="NaN"), E422),
    ("top_k-2.5-json", "POST /predict/json", b64(PNG, top_k=2.5), E422),
    ("version-0", "POST /predict", form(PNG, version="0"), E422),
    ("version--1-json", "POST /predict/json", b64(PNG, version=-1), E422),
    ("version-999", "POST /predict", form(PNG, version="999"), E404),
    ("version-10**30", "POST /predict", form(PNG, version=str(10**30)), E404),
    ("version-10**30-json", "POST /predict/json", b64(PNG, version=10**30), E404),
    ("version-abc", "POST /predict/batch", batch(PNG, version="abc"), E422),
    ("version-NaN", "POST /predict", form(PNG, version="NaN"), E422),
    ("version-Infinity-json", "POST /predict/json", b64(PNG, version="Infinity"), E422),
    ("version-1e999", "POST /predict", form(PNG, version="1e999"), E422),
    # model names: unicode, path traversal, control characters, huge
    ("model-unicode", "POST /predict", form(PNG, model="数字-cnn\u202e"), E404),
    ("model-emoji-json", "POST /predict/json", b64(PNG, model="\U0001f4a3"), E404),
    ("model-traversal", "POST /predict", form(PNG, model="../../etc/passwd"), E404),
    ("model-traversal-json", "POST /predict/json", b64(PNG, model="../../etc/passwd"), E404),
    ("model-encoded-traversal", "POST /predict", form(PNG, model="%2e%2e%2f"), E404),
    ("model-dot-dot-inside", "POST /predict/batch", batch(PNG, model="digits-cnn/../x"), E404),
    ("model-nul-byte", "POST /predict", form(PNG, model="digits-cnn\x00"), E404),
    ("model-nul-byte-json", "POST /predict/json", b64(PNG, model="digits-cnn\x00.onnx"), E404),
    ("model-newline-json", "POST /predict/json", b64(PNG, model="x\nrejected: forged"), E404),
    ("model-huge-json", "POST /predict/json", b64(PNG, model=HUGE[:1_000_000]), E422),
    ("model-not-string-json", "POST /predict/json", b64(PNG, model=["digits-cnn"]), E422),
    # wrong methods and paths
    ("get-predict", "GET /predict", {}, E405),
    ("put-predict-json", "PUT /predict/json", as_json({"image_base64": "aGk="}), E405),
    ("delete-predict-batch", "DELETE /predict/batch", {}, E405),
    ("patch-predict", "PATCH /predict", form(PNG), E405),
    ("post-models", "POST /models", as_json({}), E405),
    ("delete-models", "DELETE /models", {}, E405),
    ("post-livez", "POST /livez", {}, E405),
    ("put-readyz", "PUT /readyz", {}, E405),
    ("post-metrics", "POST /metrics", {}, E405),
    ("traversal-path", "GET /%2e%2e/%2e%2e/etc/passwd", {}, E404),
    ("encoded-slash-path", "POST /predict/..%2fmodels", form(PNG), E404),
]


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def log_start(server: Server) -> int:
    """Where the server's log stood before this module's first request."""
    return len(server.log())


def send(client: httpx.Client, endpoint: str, how: Send) -> httpx.Response:
    method, path = endpoint.split(" ", 1)
    return client.request(method, path, **how)


def check(response: httpx.Response, path: str, expected: set[int]) -> None:
    status = response.status_code
    assert status < 500, f"{status}: {response.text[:500]}"
    assert status in expected, f"{status}, not {sorted(expected)}: {response.text[:500]}"
    assert response.headers["content-type"] == "application/json", response.headers
    assert "Traceback" not in response.text
    body = response.json()
    if status == 200:
        results = body.get("results") or [body]
        assert body["model"] and all(r["predictions"] for r in results), body
        assert all(0 <= p["probability"] <= 1 for r in results for p in r["predictions"])
        return
    assert set(body) == {"error", "detail"} and isinstance(body["error"], str), body
    assert body["error"]
    assert len(response.content) < 64 * 1024, "an error must not echo a large input back"
    if status == 405 and "allow" not in response.headers and path in BENTOML_PATHS:
        pytest.xfail("service/bento.py ApiShape drops the Allow header of BentoML's own 405s")
    if status == 405:
        assert response.headers.get("allow"), "a 405 must name the allowed methods (RFC 9110)"


def test_corpus_covers_every_endpoint() -> None:
    ids = [case[0] for case in CASES]
    assert len(ids) == len(set(ids)) >= 30
    assert {endpoint.split()[1] for _, endpoint, _, _ in CASES} >= {*API_PATHS, "/metrics"}


@pytest.mark.parametrize(
    ("endpoint", "how", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_hostile_input(
    client: httpx.Client, log_start: int, endpoint: str, how: Send, expected: set[int]
) -> None:
    check(send(client, endpoint, how), endpoint.split()[1], expected)


def test_server_survives_the_corpus(server: Server, client: httpx.Client, log_start: int) -> None:
    for _, endpoint, how, _ in CASES:  # once more, back to back, whatever ran before
        assert send(client, endpoint, how).status_code < 500, endpoint
    assert client.get("/readyz").status_code == 200
    r = client.post("/predict", files={"image": ("7.png", SEVEN)}, data={"top_k": "1"})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0]["label"] == "7"
    log = server.log()[log_start:]
    assert "rejected POST /predict: 413" in log  # the log these requests wrote
    assert max(len(line) for line in log.splitlines()) < 64 * 1024, "a log line echoed an input"
    for sign in ("Traceback", "internal error", "Exception in ASGI", "Error in ASGI"):
        assert sign not in log, log[-5000:]
