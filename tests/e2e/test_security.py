"""API keys and header limits on real servers: predict endpoints need DIGITSERVE_API_KEY (401
without a key, 403 with a wrong one), /admin needs DIGITSERVE_ADMIN_API_KEY and is closed when
it is unset, probes and scrapers need no key, oversized headers get 431; every refusal in the
API's JSON error shape, and the server stays ready."""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from service.core.errors import Forbidden, Unauthorized
from service.http.security import SecurityMiddleware
from service.settings import ServiceSettings
from tests.helpers import ROOT, Server, running_server

PREDICT_KEY = "predict-key-0123456789abcdef"
ADMIN_KEY = "admin-key-fedcba9876543210"
SEVEN = (ROOT / "examples" / "digits" / "7.png").read_bytes()

Request = Callable[[str, dict[str, str]], httpx.Response]


def predict(url: str, headers: dict[str, str]) -> httpx.Response:
    files = {"image": ("7.png", SEVEN, "image/png")}
    return httpx.post(f"{url}/predict", files=files, headers=headers, timeout=30)


def predict_json(url: str, headers: dict[str, str]) -> httpx.Response:
    body = {"image_base64": base64.b64encode(SEVEN).decode()}
    return httpx.post(f"{url}/predict/json", json=body, headers=headers, timeout=30)


def predict_batch(url: str, headers: dict[str, str]) -> httpx.Response:
    files = [("images", ("7.png", SEVEN, "image/png"))] * 2
    return httpx.post(f"{url}/predict/batch", files=files, headers=headers, timeout=30)


def predict_text(url: str, headers: dict[str, str]) -> httpx.Response:
    body = {"text": "the striker scored twice in the second half"}
    return httpx.post(f"{url}/predict/text", json=body, headers=headers, timeout=30)


def v2_infer(url: str, headers: dict[str, str]) -> httpx.Response:
    body = {"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32",
                        "data": [0.0] * 64}]}  # fmt: skip
    return httpx.post(f"{url}/v2/models/digits-cnn/infer", json=body, headers=headers, timeout=30)


def v2_infer_binary(url: str, headers: dict[str, str]) -> httpx.Response:
    """The binary tensor extension: a JSON header, the tensor's raw bytes after it, and the
    logits asked for as raw bytes too."""
    header = json.dumps({
        "inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32",
                    "parameters": {"binary_data_size": 256}}],
        "outputs": [{"name": "logits", "parameters": {"binary_data": True}}],
    }).encode()  # fmt: skip
    framing = {"Inference-Header-Content-Length": str(len(header))}
    return httpx.post(
        f"{url}/v2/models/digits-cnn/versions/1/infer",
        content=header + bytes(256),
        headers={**framing, **headers},
        timeout=30,
    )


def explain(url: str, headers: dict[str, str]) -> httpx.Response:
    files = {"image": ("7.png", SEVEN, "image/png")}
    return httpx.post(f"{url}/explain", files=files, headers=headers, timeout=30)


def explain_text(url: str, headers: dict[str, str]) -> httpx.Response:
    body = {"text": "the striker scored twice in the second half"}
    return httpx.post(f"{url}/explain/text", json=body, headers=headers, timeout=30)


PREDICT_CALLS: list[tuple[str, Request]] = [
    ("/predict", predict),
    ("/predict/json", predict_json),
    ("/predict/batch", predict_batch),
    ("/predict/text", predict_text),
    ("/v2/models/digits-cnn/infer", v2_infer),
    ("/v2/models/digits-cnn/versions/1/infer", v2_infer_binary),
    ("/explain", explain),
    ("/explain/text", explain_text),
]
PREDICT_IDS = [path for path, _ in PREDICT_CALLS]


def assert_error_shape(r: httpx.Response, path: str) -> dict[str, Any]:
    """The API's `{"error": str, "detail": ...}`; the Open Inference Protocol's paths answer
    in that protocol's `{"error": str}`."""
    assert r.headers["content-type"] == "application/json", r.text
    body: dict[str, Any] = r.json()
    if path.startswith("/v2/"):
        assert set(body) == {"error"}, body
    else:
        assert set(body) == {"error", "detail"}, body
    assert isinstance(body["error"], str) and body["error"]
    return body


def raw_request(url: str, path: str, header_lines: list[bytes], body: bytes = b"{}") -> bytes:
    """Send header lines byte for byte (httpx refuses a header value with trailing space, e.g.
    `Authorization: Bearer `); returns the status line."""
    host, port = url.removeprefix("http://").split(":")
    request = b"\r\n".join([
        f"POST {path} HTTP/1.1".encode(), b"Host: " + host.encode(),
        b"Content-Type: application/json", b"Content-Length: %d" % len(body),
        b"Connection: close", *header_lines, b"", b"",
    ]) + body  # fmt: skip
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(request)
        answer = b""
        while b"\r\n" not in answer:
            chunk = s.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer.split(b"\r\n", 1)[0]


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with both keys set, on the bundled repository."""
    log = tmp_path_factory.mktemp("keyed") / "server.log"
    env = {"DIGITSERVE_API_KEY": PREDICT_KEY, "DIGITSERVE_ADMIN_API_KEY": ADMIN_KEY}
    with running_server(log, "--model-repo", "exports", "--workers", "2", env=env) as srv:
        yield srv


@pytest.fixture(scope="module")
def keyless(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with neither key: predict is open, /admin is closed."""
    log = tmp_path_factory.mktemp("keyless") / "server.log"
    with running_server(log, "--model-repo", "exports", "--workers", "2") as srv:
        yield srv


# ---------------------------------------------------------------------------------------------
# Predict endpoints


@pytest.mark.parametrize(("path", "call"), PREDICT_CALLS, ids=PREDICT_IDS)
def test_predict_without_a_key_is_401_with_a_challenge(
    keyed: Server, path: str, call: Request
) -> None:
    for headers in ({}, {"Authorization": "Basic cHJlZGljdA=="}, {"Authorization": "Bearer"}):
        r = call(keyed.url, headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.headers["www-authenticate"].startswith("Bearer"), r.headers
        body = assert_error_shape(r, path)
        assert "API key" in body["error"]


@pytest.mark.parametrize(("path", "call"), PREDICT_CALLS, ids=PREDICT_IDS)
def test_predict_with_a_wrong_key_is_403(keyed: Server, path: str, call: Request) -> None:
    wrong = [
        {"Authorization": "Bearer nope"},
        {"Authorization": f"Bearer {PREDICT_KEY[:-1]}X"},  # differs in the last character only
        {"X-API-Key": PREDICT_KEY[:-1]},  # a prefix of the key
        {"X-API-Key": PREDICT_KEY + "0"},  # the key and more
        {"X-API-Key": ""},
        {"Authorization": f"Bearer {ADMIN_KEY}"},  # the admin key does not open predict
        {"X-API-Key": ADMIN_KEY},
    ]
    for headers in wrong:
        r = call(keyed.url, headers)
        assert r.status_code == 403, (headers, r.text)
        assert "www-authenticate" not in r.headers
        assert_error_shape(r, path)
        assert PREDICT_KEY not in r.text and ADMIN_KEY not in r.text


@pytest.mark.parametrize(("path", "call"), PREDICT_CALLS, ids=PREDICT_IDS)
def test_predict_with_the_key_is_200(keyed: Server, path: str, call: Request) -> None:
    for headers in ({"Authorization": f"Bearer {PREDICT_KEY}"}, {"X-API-Key": PREDICT_KEY}):
        r = call(keyed.url, headers)
        assert r.status_code == 200, (path, headers, r.text)


def test_predict_answers_the_digit_with_the_key(keyed: Server) -> None:
    r = predict(keyed.url, {"Authorization": f"Bearer {PREDICT_KEY}"})
    assert r.json()["predictions"][0]["label"] == "7"


def test_a_binary_v2_answer_with_the_key_is_framed(keyed: Server) -> None:
    r = v2_infer_binary(keyed.url, {"X-API-Key": PREDICT_KEY})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream"
    length = int(r.headers["inference-header-content-length"])
    output = json.loads(r.content[:length])["outputs"][0]
    assert output["parameters"] == {"binary_data_size": 40}
    assert len(r.content) == length + 40


def test_an_empty_bearer_token_is_403(keyed: Server) -> None:
    for value in (b"Bearer ", b"Bearer    "):
        status = raw_request(keyed.url, "/predict/json", [b"Authorization: " + value])
        assert status == b"HTTP/1.1 403 Forbidden", (value, status)
    # The scheme is case-insensitive: the right key under "bearer" gets past the check (422:
    # the body lacks its image).
    for scheme in (b"bearer", b"BEARER"):
        header = b"Authorization: " + scheme + b" " + PREDICT_KEY.encode()
        status = raw_request(keyed.url, "/predict/json", [header])
        assert status.startswith(b"HTTP/1.1 422"), (scheme, status)


def test_probes_scrapers_and_model_listing_need_no_key(keyed: Server) -> None:
    pages = ("/", "/demo/demo.js", "/docs", "/docs.json")
    for path in ("/livez", "/readyz", "/metrics", "/models", "/v2/health/ready", *pages):
        r = httpx.get(f"{keyed.url}{path}", timeout=10)
        assert r.status_code == 200, (path, r.text)
    assert {m["name"] for m in httpx.get(f"{keyed.url}/models").json()["models"]} >= {
        "digits-cnn",
        "digits-lstm",
    }


# ---------------------------------------------------------------------------------------------
# Admin endpoint


def test_admin_reload_needs_the_admin_key(keyed: Server) -> None:
    url = f"{keyed.url}/admin/reload"
    r = httpx.post(url, timeout=30)
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert_error_shape(r, "/admin/reload")
    for headers in (
        {"Authorization": f"Bearer {PREDICT_KEY}"},  # the predict key does not open admin
        {"X-API-Key": PREDICT_KEY},
        {"X-API-Key": ADMIN_KEY[:-1] + "X"},
    ):
        r = httpx.post(url, headers=headers, timeout=30)
        assert r.status_code == 403, (headers, r.text)
        assert_error_shape(r, "/admin/reload")
    for headers in ({"Authorization": f"Bearer {ADMIN_KEY}"}, {"X-API-Key": ADMIN_KEY}):
        r = httpx.post(url, headers=headers, timeout=60)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["loaded"] == [] and body["failed"] == {}
        assert "digits-cnn:1" in body["models"]


def test_admin_is_closed_without_an_admin_key(keyless: Server) -> None:
    for headers in ({}, {"Authorization": f"Bearer {ADMIN_KEY}"}, {"X-API-Key": ""}):
        r = httpx.post(f"{keyless.url}/admin/reload", headers=headers, timeout=30)
        assert r.status_code == 403, (headers, r.text)
        body = assert_error_shape(r, "/admin/reload")
        assert "DIGITSERVE_ADMIN_API_KEY" in body["error"]


@pytest.mark.parametrize(("path", "call"), PREDICT_CALLS, ids=PREDICT_IDS)
def test_predict_needs_no_key_when_none_is_set(keyless: Server, path: str, call: Request) -> None:
    r = call(keyless.url, {})
    assert r.status_code == 200, (path, r.text)


# ---------------------------------------------------------------------------------------------
# Header limits


def test_oversized_headers_get_431_and_the_server_stays_ready(keyed: Server) -> None:
    assert httpx.get(f"{keyed.url}/livez", headers={"X-Pad": "a" * 15_000}).status_code == 200
    many = {f"X-Pad-{i}": "b" * 500 for i in range(40)}  # ~20 KiB over 40 headers
    cases: list[tuple[str, str, dict[str, str]]] = [
        ("GET", "/livez", {"X-Pad": "a" * 17_000}),
        ("GET", "/readyz", many),
        ("POST", "/predict/json", {"X-API-Key": PREDICT_KEY, "X-Pad": "c" * 64_000}),
        ("POST", "/predict/json", {"Cookie": "d" * 20_000}),  # before the key check: no 401
        ("POST", "/admin/reload", {"X-API-Key": ADMIN_KEY, **many}),
    ]
    for method, path, headers in cases:
        r = httpx.request(method, f"{keyed.url}{path}", headers=headers, json={}, timeout=30)
        assert r.status_code == 431, (path, r.text[:200])
        body = assert_error_shape(r, path)
        assert body["detail"]["limit_bytes"] == 16 * 1024
        assert body["detail"]["bytes"] > 16 * 1024
    for _ in range(4):  # every worker still answers
        assert httpx.get(f"{keyed.url}/readyz", timeout=10).status_code == 200
        assert predict(keyed.url, {"X-API-Key": PREDICT_KEY}).status_code == 200


# ---------------------------------------------------------------------------------------------
# The key comparison itself


def scope(path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {"type": "http", "path": path, "headers": headers}


def test_keys_are_compared_with_hmac_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    import service.http.security

    calls: list[tuple[bytes, bytes]] = []
    real = service.core.keys.hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(service.core.keys.hmac, "compare_digest", recording)
    settings = ServiceSettings(api_key=PREDICT_KEY, admin_api_key=ADMIN_KEY)
    check = SecurityMiddleware.check

    check(scope("/predict", [(b"x-api-key", PREDICT_KEY.encode())]), settings)
    check(scope("/admin/reload", [(b"authorization", f"Bearer {ADMIN_KEY}".encode())]), settings)
    with pytest.raises(Forbidden):
        check(scope("/predict/json", [(b"x-api-key", b"nope")]), settings)
    with pytest.raises(Forbidden):
        check(scope("/admin/reload", [(b"x-api-key", PREDICT_KEY.encode())]), settings)
    with pytest.raises(Unauthorized):
        check(scope("/v2/models/m/infer", []), settings)
    check(scope("/models", []), settings)  # open: no comparison
    assert calls == [
        (PREDICT_KEY.encode(), PREDICT_KEY.encode()),
        (ADMIN_KEY.encode(), ADMIN_KEY.encode()),
        (b"nope", PREDICT_KEY.encode()),
        (PREDICT_KEY.encode(), ADMIN_KEY.encode()),
    ]
