"""The Open Inference Protocol's binary tensor data and statistics extensions on the real session
server: every bundled model version through tritonclient with binary and JSON tensors both
ways, against onnxruntime offline on the same real inputs; the statistics extension's figures,
exact over the workers; every framing mistake a 4xx in the protocol's `{"error": "..."}` shape,
also under a seeded fuzz of the framing."""

from __future__ import annotations

import csv
import io
import json
import random
import time
from collections.abc import Iterator
from functools import cache
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton
from PIL import Image
from tritonclient.utils import InferenceServerException

from modelrepo.layout import list_models, list_versions, open_version
from modelrepo.preprocess import image_to_pixels, pixels_to_input
from modelrepo.text import encode_batch
from tests.helpers import EXPORTS, ROOT, Server, digits_test_pngs, png_bytes

ROWS = 6  # real inputs per request
VERSIONS = [(name, v) for name in list_models(EXPORTS) for v in list_versions(EXPORTS, name)]
VERSION_IDS = [f"{name}:{v}" for name, v in VERSIONS]
HEADER = "Inference-Header-Content-Length"
STAGES = ("queue", "compute_input", "compute_infer", "compute_output")
STATS_VERSION = ("digits-cnn", 1)  # named explicitly by no other test's inference


@cache
def real_images(size: int) -> tuple[bytes, ...]:
    """ROWS real digits as PNG: scikit-learn's 8x8 test digits, or MNIST's held-out 28x28."""
    if size == 8:
        return tuple(digits_test_pngs()[0][:ROWS])
    from training.variants import held_out

    return tuple(png_bytes(pixels) for pixels in held_out()[0][:ROWS])


def real_texts() -> list[str]:
    with (ROOT / "training" / "data" / "text-topics.csv").open(newline="") as f:
        return [row["text"] for _, row in zip(range(ROWS), csv.DictReader(f), strict=False)]


@cache
def model_input(name: str, version: int) -> np.ndarray:
    """ROWS real inputs as this version's input tensor, preprocessed as its manifest says (the
    service's own path for uploads): images through their preprocessing, texts through their
    tokenizer."""
    manifest = open_version(EXPORTS, name, version).manifest
    if manifest.task == "text-classification":
        return encode_batch(real_texts(), manifest.text_preprocessing)
    spec = manifest.image_preprocessing
    pixels = []
    for data in real_images(spec.size[0]):
        with Image.open(io.BytesIO(data)) as image:
            pixels.append(image_to_pixels(image, spec))
    return pixels_to_input(np.stack(pixels), spec)


@cache
def offline_logits(name: str, version: int) -> np.ndarray:
    opened = open_version(EXPORTS, name, version)
    session = ort.InferenceSession(str(opened.model_path), providers=["CPUExecutionProvider"])
    x = model_input(name, version)
    logits: np.ndarray = session.run(None, {opened.manifest.input.name: x})[0]
    return logits


def datatype(x: np.ndarray) -> str:
    return {np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64"}[x.dtype]


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    yield c
    c.close()


# ---------------------------------------------------------------------------------------------
# tritonclient, every model version, binary and JSON both ways

# (input as binary, output as binary; None: no output named, which asks for binary outputs)
MODES = [(True, True), (True, None), (False, False), (True, False), (False, True), (False, None)]
MODE_IDS = [
    f"in-{'bin' if i else 'json'}-out-{'default' if o is None else 'bin' if o else 'json'}"
    for i, o in MODES
]


@pytest.mark.parametrize(("binary_in", "binary_out"), MODES, ids=MODE_IDS)
@pytest.mark.parametrize(("name", "version"), VERSIONS, ids=VERSION_IDS)
def test_every_version_answers_as_onnxruntime_offline(
    client: triton.InferenceServerClient,
    name: str,
    version: int,
    binary_in: bool,
    binary_out: bool | None,
) -> None:
    x = model_input(name, version)
    tensor = triton.InferInput("input", list(x.shape), datatype(x))
    if binary_in:
        tensor.set_data_from_numpy(x)  # tritonclient's default: binary_data=True
    else:
        tensor.set_data_from_numpy(x, binary_data=False)
    if binary_out is None:
        outputs = None
    elif binary_out:
        outputs = [triton.InferRequestedOutput("logits")]  # the default: binary_data=True
    else:
        outputs = [triton.InferRequestedOutput("logits", binary_data=False)]
    result = client.infer(name, [tensor], model_version=str(version), outputs=outputs)
    response = result.get_response()
    assert (response["model_name"], response["model_version"]) == (name, str(version))
    output = result.get_output("logits")
    expected = offline_logits(name, version)
    if binary_out is False:
        assert "data" in output and "parameters" not in output, output
    else:
        assert "data" not in output, output
        assert output["parameters"] == {"binary_data_size": expected.size * 4}
    logits = result.as_numpy("logits")
    assert logits is not None and logits.dtype == np.float32 and logits.shape == expected.shape
    assert np.abs(logits - expected).max() <= 1e-5


@pytest.mark.parametrize("name", list_models(EXPORTS))
def test_no_version_is_answered_by_the_highest(
    client: triton.InferenceServerClient, name: str
) -> None:
    latest = list_versions(EXPORTS, name)[-1]
    x = model_input(name, latest)
    tensor = triton.InferInput("input", list(x.shape), datatype(x))
    tensor.set_data_from_numpy(x)
    result = client.infer(name, [tensor], request_id="no-version")
    assert result.get_response()["model_version"] == str(latest)
    assert result.get_response()["id"] == "no-version"
    logits = result.as_numpy("logits")
    assert logits is not None
    assert np.abs(logits - offline_logits(name, latest)).max() <= 1e-5


# ---------------------------------------------------------------------------------------------
# The framing by hand


def framed(
    header: dict[str, Any] | bytes,
    blob: bytes = b"",
    length: str | bytes | None = None,
) -> dict[str, Any]:
    """httpx keyword arguments for a binary-framed body: the JSON header, then `blob`, with the
    header's length (or `length`) in Inference-Header-Content-Length."""
    head = header if isinstance(header, bytes) else json.dumps(header).encode()
    return {
        "content": head + blob,
        "headers": {HEADER: str(len(head)) if length is None else length},
    }


def binary_input(shape: list[int], size: Any, dtype: str = "FP32", **fields: Any) -> dict[str, Any]:
    return {
        "name": "input",
        "shape": shape,
        "datatype": dtype,
        "parameters": {"binary_data_size": size},
        **fields,
    }


def read_framed(r: httpx.Response) -> tuple[dict[str, Any], bytes]:
    """An answer with binary outputs: its JSON header and the bytes after it."""
    assert r.headers["content-type"] == "application/octet-stream", r.headers
    length = int(r.headers[HEADER])
    header: dict[str, Any] = json.loads(r.content[:length])
    return header, r.content[length:]


def test_hand_framed_binary_answers_are_framed(server: Server) -> None:
    name, version = "digits-lstm", 1
    x, expected = model_input(name, version), offline_logits(name, version)
    body = {
        "id": "framed",
        "inputs": [binary_input(list(x.shape), x.nbytes)],
        "outputs": [{"name": "logits", "parameters": {"binary_data": True}}],
    }
    r = httpx.post(f"{server.url}/v2/models/{name}/infer", timeout=30, **framed(body, x.tobytes()))
    assert r.status_code == 200, r.text
    header, raw = read_framed(r)
    assert header["id"] == "framed"
    assert header["outputs"] == [
        {
            "name": "logits",
            "datatype": "FP32",
            "shape": list(expected.shape),
            "parameters": {"binary_data_size": expected.nbytes},
        }
    ]
    logits = np.frombuffer(raw, dtype="<f4").reshape(expected.shape)
    assert np.abs(logits - expected).max() <= 1e-5


def test_json_request_can_ask_for_binary_outputs_and_outputs_can_decline(server: Server) -> None:
    name, version = "digits-cnn", 2
    x, expected = model_input(name, version), offline_logits(name, version)
    plain = {"name": "input", "shape": list(x.shape), "datatype": "FP32"}
    plain["data"] = x.ravel().tolist()
    url = f"{server.url}/v2/models/{name}/versions/{version}/infer"
    # No header: a plain JSON request, asking for binary outputs, gets them framed.
    r = httpx.post(url, json={"inputs": [plain], "parameters": {"binary_data_output": True}})
    assert r.status_code == 200, r.text
    _, raw = read_framed(r)
    assert np.abs(np.frombuffer(raw, "<f4").reshape(expected.shape) - expected).max() <= 1e-5
    # An output's own binary_data: false wins over the request's binary_data_output.
    declined = {
        "inputs": [plain],
        "parameters": {"binary_data_output": True},
        "outputs": [{"name": "logits", "parameters": {"binary_data": False}}],
    }
    r = httpx.post(url, json=declined)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json", r.text
    assert HEADER.lower() not in r.headers
    data = np.array(r.json()["outputs"][0]["data"], dtype=np.float32).reshape(expected.shape)
    assert np.abs(data - expected).max() <= 1e-5


X1 = np.zeros((1, 1, 8, 8), dtype=np.float32).tobytes()  # 256 bytes
GOOD = {"inputs": [binary_input([1, 1, 8, 8], 256)]}
INFER = "/v2/models/digits-cnn/infer"
TEXT = "/v2/models/text-topics/infer"
PLAIN = {"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32"}
GOOD_LENGTH = len(json.dumps(GOOD))
UPLOAD_LIMIT = 10 * 1024 * 1024  # DIGITSERVE_MAX_UPLOAD_BYTES' default

ERRORS: list[tuple[str, str, dict[str, Any], int, str]] = [
    # (id, path, httpx keyword arguments, status, part of the message)
    ("length not a number", INFER, framed(GOOD, X1, "abc"), 400, "must be a byte count"),
    ("length negative", INFER, framed(GOOD, X1, "-1"), 400, "must be a byte count"),
    ("length signed", INFER, framed(GOOD, X1, f"+{GOOD_LENGTH}"), 400, "must be a byte count"),
    ("length a float", INFER, framed(GOOD, X1, f"{GOOD_LENGTH}.0"), 400, "must be a byte count"),
    ("length huge", INFER, framed(GOOD, X1, "9" * 30), 400, "must be a byte count"),
    ("length not ascii", INFER, framed(GOOD, X1, b"\xc2\xb2"), 400, "must be a byte count"),
    ("length empty", INFER, framed(GOOD, X1, ""), 400, "must be a byte count"),
    ("length past the body", INFER, framed(GOOD, X1, str(GOOD_LENGTH + 257)), 400,
     f"but the body has {GOOD_LENGTH + 256} bytes"),
    ("length 0", INFER, framed(GOOD, X1, "0"), 400, "is 0: the JSON header is missing"),
    ("length inside the JSON", INFER, framed(GOOD, X1, "10"), 400, "not valid JSON"),
    ("length past the JSON", INFER, framed(GOOD, X1, str(GOOD_LENGTH + 8)), 400,
     "not valid JSON"),
    ("header not JSON", INFER, framed(b"inputs", X1), 400, "not valid JSON"),
    ("header without inputs", INFER, framed({}, X1), 400, "inputs: Field required"),
    ("size a string", INFER, framed({"inputs": [binary_input([1, 1, 8, 8], "256")]}, X1), 400,
     "binary_data_size must be a non-negative integer, got '256'"),
    ("size negative", INFER, framed({"inputs": [binary_input([1, 1, 8, 8], -256)]}, X1), 400,
     "binary_data_size must be a non-negative integer, got -256"),
    ("size a bool", INFER, framed({"inputs": [binary_input([1, 1, 8, 8], True)]}, X1), 400,
     "binary_data_size must be a non-negative integer, got True"),
    ("size a float", INFER, framed({"inputs": [binary_input([1, 1, 8, 8], 256.0)]}, X1), 400,
     "binary_data_size must be a non-negative integer, got 256.0"),
    ("size null", INFER, framed({"inputs": [binary_input([1, 1, 8, 8], None)]}, X1), 400,
     "binary_data_size must be a non-negative integer, got None"),
    ("bytes past the sizes", INFER, framed(GOOD, X1 + b"\0" * 4), 400,
     "add up to 256 bytes, but 260 bytes follow the JSON header"),
    ("bytes short of the sizes", INFER, framed(GOOD, X1[:200]), 400,
     "add up to 256 bytes, but 200 bytes follow the JSON header"),
    ("size huge", INFER, framed({"inputs": [binary_input([1, 1, 8, 8], 10**30)]}, X1), 400,
     f"add up to {10**30} bytes, but 256 bytes"),
    ("bytes not the shape's", INFER,
     framed({"inputs": [binary_input([2, 1, 8, 8], 256)]}, X1), 400,
     "has 256 bytes of data; FP32 of shape [2, 1, 8, 8] is 512 bytes"),
    ("bytes not whole values", INFER,
     framed({"inputs": [binary_input([1, 1, 8, 8], 255)]}, X1[:255]), 400,
     "has 255 bytes of data"),
    ("unknown datatype", INFER,
     framed({"inputs": [binary_input([1, 1, 8, 8], 256, "FP99")]}, X1), 400,
     "unknown datatype 'FP99'"),
    ("wrong datatype", INFER,
     framed({"inputs": [binary_input([1, 1, 8, 8], 512, "INT64")]}, b"\0" * 512), 400,
     "is FP32, got INT64"),
    ("wrong shape", INFER, framed({"inputs": [binary_input([1, 1, 8, 9], 288)]}, b"\0" * 288),
     400, "has shape [-1, 1, 8, 8]"),
    ("empty batch", INFER, framed({"inputs": [binary_input([0, 1, 8, 8], 0)]}, b""), 400,
     "has shape"),
    ("data and a size", INFER,
     framed({"inputs": [binary_input([1, 1, 8, 8], 256, data=[0.0] * 64)]}, X1), 400,
     "has both data and a binary_data_size"),
    ("neither data nor a size", INFER, framed({"inputs": [PLAIN]}, b""), 400,
     "has neither data nor a binary_data_size"),
    ("size without the header", INFER, {"json": GOOD}, 400,
     "no Inference-Header-Content-Length header"),
    ("not finite", INFER, framed(GOOD, np.full(64, np.nan, "<f4").tobytes()), 400, "finite"),
    ("infinite", INFER, framed(GOOD, np.full(64, np.inf, "<f4").tobytes()), 400, "finite"),
    ("token id past the vocabulary", TEXT,
     framed({"inputs": [binary_input([1, 32], 256, "INT64")]},
            np.full(32, 10**9, "<i8").tobytes()), 400, "token ids"),
    ("negative token id", TEXT,
     framed({"inputs": [binary_input([1, 32], 256, "INT64")]}, np.full(32, -1, "<i8").tobytes()),
     400, "token ids"),
    ("token ids as FP32", TEXT,
     framed({"inputs": [binary_input([1, 32], 128)]}, b"\0" * 128), 400, "is INT64, got FP32"),
    ("classification", INFER,
     framed({**GOOD, "outputs": [{"name": "logits", "parameters": {"classification": 3}}]}, X1),
     400, "output parameter 'classification' is not supported"),
    ("shared memory", INFER,
     framed({**GOOD, "outputs": [{"name": "logits",
                                  "parameters": {"shared_memory_region": "r"}}]}, X1),
     400, "output parameter 'shared_memory_region' is not supported"),
    ("binary_data not a bool", INFER,
     framed({**GOOD, "outputs": [{"name": "logits", "parameters": {"binary_data": 1}}]}, X1),
     400, "binary_data must be true or false, got 1"),
    ("binary_data_output not a bool", INFER,
     framed({**GOOD, "parameters": {"binary_data_output": "yes"}}, X1), 400,
     "binary_data_output must be true or false, got 'yes'"),
    ("unknown output", INFER, framed({**GOOD, "outputs": [{"name": "probs"}]}, X1), 400,
     "no output named 'probs'"),
    ("unknown model", "/v2/models/nope/infer", framed(GOOD, X1), 404, "not loaded"),
    ("unknown version", "/v2/models/digits-cnn/versions/9/infer", framed(GOOD, X1), 404,
     "no version 9"),
    ("batch over the limit", INFER,
     framed({"inputs": [binary_input([65, 1, 8, 8], 65 * 256)]}, b"\0" * 65 * 256), 413,
     "at most 64 items per request; got a batch of 65"),
    ("body over the upload limit", INFER,
     framed({"inputs": [binary_input([1, 1, 8, 8], UPLOAD_LIMIT)]}, b"\0" * UPLOAD_LIMIT), 413,
     "upload limit"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "path", "kwargs", "status", "message"), ERRORS, ids=[c[0] for c in ERRORS]
)
def test_framing_mistakes_are_4xx_in_the_protocol_shape(
    server: Server, name: str, path: str, kwargs: dict[str, Any], status: int, message: str
) -> None:
    r = httpx.post(f"{server.url}{path}", timeout=30, **kwargs)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json", r.headers
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"], str), body
    assert message in body["error"], body["error"]


def test_the_good_framing_of_the_error_cases_is_answered(server: Server) -> None:
    """The cases above differ from this request only by what they name."""
    r = httpx.post(f"{server.url}{INFER}", timeout=30, **framed(GOOD, X1))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"  # no binary output asked
    assert r.json()["outputs"][0]["shape"] == [1, 10]


def test_tritonclient_gets_framing_errors_with_their_message(
    client: triton.InferenceServerClient,
) -> None:
    x = np.zeros((1, 32), dtype=np.int64)
    x[0, 0] = 10**9  # past the vocabulary
    tensor = triton.InferInput("input", list(x.shape), "INT64")
    tensor.set_data_from_numpy(x)
    with pytest.raises(InferenceServerException, match="token ids") as refused:
        client.infer("text-topics", [tensor])
    assert refused.value.status() == "400"


# ---------------------------------------------------------------------------------------------
# A seeded fuzz of the framing

FUZZ_REQUESTS = 300
FUZZ_DEADLINE_S = 60.0  # a bound on the loop, not a speed: 300 answers take a few seconds


def fuzz_case(rng: random.Random) -> tuple[bytes, bytes, bool]:
    """A random binary-framed request: (header value, body, whether its framing is valid)."""
    rows = rng.randint(1, 3)
    right = rows * 256
    size: Any = rng.choice(
        [right] * 4 + [right - 4, right + 4, 0, -1, 10**20, "256", 1.5, True, None]
    )
    inputs = [binary_input([rows, 1, 8, 8], size)]
    body: dict[str, Any] = {"inputs": inputs}
    if rng.random() < 0.5:
        body["outputs"] = [{"name": "logits", "parameters": {"binary_data": rng.random() < 0.5}}]
    head = json.dumps(body).encode()
    if rng.random() < 0.6:
        blob = np.random.default_rng(rng.randrange(2**32)).random(rows * 64, "float32").tobytes()
    else:
        blob = rng.randbytes(rng.choice([0, 1, 255, 256, 257, 512, 768, rng.randrange(4096)]))
    total = len(head) + len(blob)
    length: str | bytes = rng.choice(
        [
            str(len(head)),
            str(len(head)),
            str(len(head)),
            str(rng.randint(-20, -1)),
            "0",
            str(rng.randint(1, max(1, len(head) - 1))),  # inside the JSON
            str(len(head) + rng.randint(1, max(1, len(blob) or 1))),  # into the tensor bytes
            str(total + rng.randint(1, 10**6)),  # past the body
            str(10 ** rng.randint(12, 40)),
            rng.choice(["abc", "0x10", "1e3", "12.0", "+12", "1_0", "--", "NaN", "٣"]),
        ]
    )
    if isinstance(length, str) and not length.isascii():
        length = length.encode()
    valid = (
        length == str(len(head))
        and type(size) is int
        and size == right
        and len(blob) == right
        and bool(np.isfinite(np.frombuffer(blob, "<f4")).all())
    )
    return (length if isinstance(length, bytes) else length.encode()), head + blob, valid


def test_fuzzed_framing_is_never_a_5xx(server: Server) -> None:
    rng = random.Random(20260514)
    statuses: dict[int, int] = {}
    deadline = time.monotonic() + FUZZ_DEADLINE_S
    with httpx.Client(base_url=server.url, timeout=httpx.Timeout(10.0)) as http:
        for i in range(FUZZ_REQUESTS):
            if time.monotonic() > deadline:
                break
            length, content, valid = fuzz_case(rng)
            r = http.post(INFER, content=content, headers={HEADER.encode(): length})
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            case = (i, length, content[:300], r.text[:300])
            if valid:
                assert r.status_code == 200, case
                if r.headers["content-type"] == "application/octet-stream":
                    header, raw = read_framed(r)
                    assert len(raw) == header["outputs"][0]["parameters"]["binary_data_size"]
            else:
                assert 400 <= r.status_code < 500, case
                assert set(r.json()) == {"error"}, case
    print(f"\nfuzzed framing: {dict(sorted(statuses.items()))}")
    assert sum(statuses.values()) >= 1
    assert statuses.get(200, 0) and statuses.get(400, 0)  # the seed covers both sides
    assert httpx.get(f"{server.url}/v2/health/ready", timeout=10).status_code == 200
    assert "Traceback" not in server.log(), server.log()[-3000:]


# ---------------------------------------------------------------------------------------------
# Statistics


def stats(server: Server, path: str) -> dict[str, Any]:
    """One statistics answer, on a new connection each time (so the workers take turns)."""
    with httpx.Client(timeout=30) as fresh:
        r = fresh.get(f"{server.url}{path}")
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


def entry(answer: dict[str, Any], name: str, version: int) -> dict[str, Any]:
    found = [e for e in answer["model_stats"] if (e["name"], e["version"]) == (name, str(version))]
    assert len(found) == 1, answer
    return found[0]


ENTRY_KEYS = {
    "name",
    "version",
    "last_inference",
    "inference_count",
    "execution_count",
    "inference_stats",
    "batch_stats",
}
INFER_STATS_KEYS = {"success", "fail", *STAGES, "cache_hit", "cache_miss"}


def test_statistics_count_exactly_the_inferences_made(
    server: Server, client: triton.InferenceServerClient
) -> None:
    name, version = STATS_VERSION
    requests, rows, refused = 8, 4, 2
    x = model_input(name, version)[:rows]
    path = f"/v2/models/{name}/versions/{version}/stats"
    before = entry(stats(server, path), name, version)
    started_ms = time.time() * 1000
    for i in range(requests):  # each on a new connection: spread over the workers
        body = {"inputs": [binary_input(list(x.shape), x.nbytes)]}
        if i % 2:
            body["outputs"] = [{"name": "logits", "parameters": {"binary_data": True}}]
        r = httpx.post(
            f"{server.url}/v2/models/{name}/versions/{version}/infer",
            timeout=30,
            **framed(body, x.tobytes()),
        )
        assert r.status_code == 200, r.text
    for _ in range(refused):  # a resolved model, a refused tensor: counted as failures
        wrong = {"inputs": [binary_input([1, 1, 8, 9], 288)]}
        r = httpx.post(
            f"{server.url}/v2/models/{name}/versions/{version}/infer",
            timeout=30,
            **framed(wrong, b"\0" * 288),
        )
        assert r.status_code == 400, r.text
    finished_ms = time.time() * 1000
    # tritonclient parses it; every read, whichever worker answers, has the same figures.
    parsed = client.get_inference_statistics(name, str(version))
    afters = [parsed] + [stats(server, path) for _ in range(4)]
    assert all(a == afters[0] for a in afters), afters
    after = entry(parsed, name, version)
    assert set(after) == ENTRY_KEYS and set(after["inference_stats"]) == INFER_STATS_KEYS
    assert after["batch_stats"] == []
    delta = {
        key: {
            "count": after["inference_stats"][key]["count"]
            - before["inference_stats"][key]["count"],
            "ns": after["inference_stats"][key]["ns"] - before["inference_stats"][key]["ns"],
        }
        for key in INFER_STATS_KEYS
    }
    assert delta["success"]["count"] == requests, delta
    for stage in STAGES:
        assert delta[stage]["count"] == requests, (stage, delta)
        assert delta[stage]["ns"] > 0, (stage, delta)
    assert delta["success"]["ns"] > 0
    # A request's stages lie within its time from arrival to answer.
    assert sum(delta[stage]["ns"] for stage in STAGES) <= delta["success"]["ns"], delta
    assert delta["fail"]["count"] == refused and delta["fail"]["ns"] > 0, delta
    for key in ("cache_hit", "cache_miss"):
        assert after["inference_stats"][key] == {"count": 0, "ns": 0}
    assert after["inference_count"] - before["inference_count"] == requests * rows
    # One request at a time: each one its own onnxruntime call at least, a row each at most.
    executions = after["execution_count"] - before["execution_count"]
    assert requests <= executions <= requests * rows, executions
    assert started_ms - 1 <= after["last_inference"] <= finished_ms + 1, (after, started_ms)


def test_statistics_list_every_loaded_version(server: Server) -> None:
    answer = stats(server, "/v2/models/stats")
    listed = [(e["name"], e["version"]) for e in answer["model_stats"]]
    assert sorted(listed) == sorted((name, str(v)) for name, v in VERSIONS)
    for e in answer["model_stats"]:
        assert set(e) == ENTRY_KEYS and set(e["inference_stats"]) == INFER_STATS_KEYS, e
        for figure in e["inference_stats"].values():
            assert figure["count"] >= 0 and figure["ns"] >= 0, e
    for name in list_models(EXPORTS):
        one = stats(server, f"/v2/models/{name}/stats")
        assert sorted(e["version"] for e in one["model_stats"]) == sorted(
            str(v) for v in list_versions(EXPORTS, name)
        )
        assert {e["name"] for e in one["model_stats"]} == {name}


def test_statistics_through_tritonclient_without_a_model(
    client: triton.InferenceServerClient,
) -> None:
    listed = client.get_inference_statistics()
    assert len(listed["model_stats"]) == len(VERSIONS)
    mnist = client.get_inference_statistics("mnist-cnn")
    assert [e["version"] for e in mnist["model_stats"]] == [
        str(v) for v in list_versions(EXPORTS, "mnist-cnn")
    ]


STATS_ERRORS = [
    ("/v2/models/nope/stats", 404, "model 'nope' is not loaded"),
    ("/v2/models/nope/versions/1/stats", 404, "not loaded"),
    ("/v2/models/digits-cnn/versions/9/stats", 404, "no version 9"),
    ("/v2/models/digits-cnn/versions/one/stats", 400, "positive integer"),
]


@pytest.mark.parametrize(("path", "status", "message"), STATS_ERRORS)
def test_statistics_of_unknown_models_are_protocol_errors(
    server: Server, path: str, status: int, message: str
) -> None:
    r = httpx.get(f"{server.url}{path}", timeout=30)
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error"} and message in r.json()["error"], r.text
    r = httpx.post(f"{server.url}{path}", timeout=30)
    assert r.status_code == 405 and set(r.json()) == {"error"}, r.text


def test_tritonclient_reads_an_unknown_model_as_404(client: triton.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException, match="not loaded") as unknown:
        client.get_inference_statistics("nope")
    assert unknown.value.status() == "404"
