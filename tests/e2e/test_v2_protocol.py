"""The Open Inference Protocol (KServe V2) on a real server: through the client its users already
have (tritonclient[http]) for health, metadata and inference, checked against onnxruntime run
offline on the same tensors; through httpx for every client mistake, each a 4xx in the
protocol's `{"error": "..."}` shape."""

import io
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from modelrepo.layout import list_versions, open_version
from modelrepo.manifest import ImagePreprocessing
from modelrepo.preprocess import image_to_pixels, pixels_to_input
from tests.helpers import EXPORTS, Server, digits_test_pngs

MODELS = ["digits-cnn", "digits-lstm"]
BATCH = 48  # images per inference request (the service takes up to 64)


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    yield c
    c.close()


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """The first BATCH test digits as the models' (N, 1, 8, 8) input, preprocessed as the
    manifest says (the service's own path for uploaded images), and their labels."""
    pngs, labels = digits_test_pngs()
    spec = open_version(EXPORTS, "digits-cnn", 1).manifest.preprocessing
    assert isinstance(spec, ImagePreprocessing)
    for name in MODELS[1:]:  # one tensor serves both models: same preprocessing
        assert open_version(EXPORTS, name, 1).manifest.preprocessing == spec
    pixels = []
    for data in pngs[:BATCH]:
        with Image.open(io.BytesIO(data)) as image:
            pixels.append(image_to_pixels(image, spec))
    return pixels_to_input(np.stack(pixels), spec), labels[:BATCH]


def latest(name: str) -> int:
    """The version a request that names none is answered by."""
    return list_versions(EXPORTS, name)[-1]


def offline_logits(name: str, x: np.ndarray) -> np.ndarray:
    """What onnxruntime answers with the version the server answers by default."""
    version = open_version(EXPORTS, name, latest(name))
    session = ort.InferenceSession(str(version.model_path), providers=["CPUExecutionProvider"])
    logits: np.ndarray = session.run(None, {version.manifest.input.name: x})[0]
    return logits


def triton_infer(
    client: triton.InferenceServerClient, model: str, x: np.ndarray, **kwargs: Any
) -> triton.InferResult:
    tensor = triton.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=False)
    outputs = [triton.InferRequestedOutput("logits", binary_data=False)]
    return client.infer(model, [tensor], outputs=outputs, **kwargs)


def test_health(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    for model in MODELS:
        assert client.is_model_ready(model)
        assert client.is_model_ready(model, model_version="1")
    assert not client.is_model_ready("nope")
    assert not client.is_model_ready("digits-cnn", model_version="9")


def test_server_metadata(client: triton.InferenceServerClient) -> None:
    assert client.get_server_metadata() == {
        "name": "digitserve",
        "version": "0.1.0",
        "extensions": ["binary_tensor_data", "statistics"],
    }


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("version", ["", "1"])
def test_model_metadata(client: triton.InferenceServerClient, model: str, version: str) -> None:
    assert client.get_model_metadata(model, model_version=version) == {
        "name": model,
        "versions": [str(v) for v in list_versions(EXPORTS, model)],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}],
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}],
    }


@pytest.mark.parametrize("model", MODELS)
def test_infer_matches_offline_onnxruntime(
    client: triton.InferenceServerClient, digits: tuple[np.ndarray, np.ndarray], model: str
) -> None:
    x, labels = digits
    result = triton_infer(client, model, x, request_id="batch-1")
    logits = result.as_numpy("logits")
    assert logits is not None and logits.dtype == np.float32 and logits.shape == (BATCH, 10)
    assert np.abs(logits - offline_logits(model, x)).max() <= 1e-5
    assert (logits.argmax(axis=1) == labels).mean() > 0.9
    response = result.get_response()
    assert (response["model_name"], response["model_version"]) == (model, str(latest(model)))
    assert response["id"] == "batch-1"


def test_infer_with_a_version_path(
    client: triton.InferenceServerClient, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    x = digits[0][:5]
    result = triton_infer(client, "digits-lstm", x, model_version="1")
    logits = result.as_numpy("logits")
    assert logits is not None
    assert np.abs(logits - offline_logits("digits-lstm", x)).max() <= 1e-5
    assert "id" not in result.get_response()  # no id asked, none answered


def test_infer_without_named_outputs_answers_every_output(
    client: triton.InferenceServerClient, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    # tritonclient then asks for binary outputs (binary_data_output), and gets them.
    x = digits[0][:3]
    tensor = triton.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=False)
    result = client.infer("digits-cnn", [tensor])
    assert result.get_output("logits")["parameters"] == {"binary_data_size": 3 * 10 * 4}
    logits = result.as_numpy("logits")
    assert logits is not None
    assert np.abs(logits - offline_logits("digits-cnn", x)).max() <= 1e-5


def test_nested_data_is_read_row_major(
    server: Server, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    x = digits[0][:2]
    bodies = [
        {"name": "input", "shape": [2, 1, 8, 8], "datatype": "FP32", "data": data}
        for data in (x.ravel().tolist(), x.tolist())
    ]
    flat, nested = (
        httpx.post(f"{server.url}/v2/models/digits-cnn/infer", json={"inputs": [b]}) for b in bodies
    )
    assert flat.status_code == nested.status_code == 200, nested.text
    assert flat.json()["outputs"] == nested.json()["outputs"]
    logits = np.array(nested.json()["outputs"][0]["data"], dtype=np.float32).reshape(2, 10)
    assert np.abs(logits - offline_logits("digits-cnn", x)).max() <= 1e-5


def test_client_errors_reach_tritonclient_with_their_message(
    client: triton.InferenceServerClient, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    x = digits[0][:1]
    tensor = triton.InferInput("input", list(x.shape), "INT64")
    tensor.set_data_from_numpy(x.astype(np.int64), binary_data=False)
    with pytest.raises(InferenceServerException, match="is FP32, got INT64") as wrong_type:
        client.infer("digits-cnn", [tensor])
    assert wrong_type.value.status() == "400"
    # A binary tensor (tritonclient's default) of a shape the model does not take: the
    # message comes back through the binary extension's framing too.
    wide = np.zeros((1, 1, 8, 9), dtype=np.float32)
    binary = triton.InferInput("input", list(wide.shape), "FP32")
    binary.set_data_from_numpy(wide)
    with pytest.raises(InferenceServerException, match="has shape") as wrong_shape:
        client.infer("digits-cnn", [binary])
    assert wrong_shape.value.status() == "400"
    with pytest.raises(InferenceServerException, match="not loaded") as unknown:
        client.get_model_metadata("nope")
    assert unknown.value.status() == "404"


def requests_counted(server: Server, model: str, outcome: str) -> float:
    """digitserve_requests_total for the v2 endpoint, summed over the workers' samples."""
    text = httpx.get(f"{server.url}/metrics").text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "digitserve_requests"
        for sample in family.samples
        if sample.name == "digitserve_requests_total"
        and sample.labels.get("endpoint") == "/v2/infer"
        and sample.labels.get("model") == model
        and sample.labels.get("outcome") == outcome
    )


def batched_images(server: Server, model: str) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "digitserve_batch_images_sum" and sample.labels.get("model") == model
    )


def test_v2_requests_are_counted_and_batched(
    server: Server,
    client: triton.InferenceServerClient,
    digits: tuple[np.ndarray, np.ndarray],
) -> None:
    x = digits[0][:4]
    ok, bad = (
        requests_counted(server, "digits-lstm", "ok"),
        requests_counted(server, "digits-lstm", "validation_failed"),
    )
    images = batched_images(server, "digits-lstm")
    for _ in range(3):
        triton_infer(client, "digits-lstm", x)
    wrong = {"inputs": [{"name": "input", "shape": [1], "datatype": "FP32", "data": [0]}]}
    assert httpx.post(f"{server.url}/v2/models/digits-lstm/infer", json=wrong).status_code == 400
    assert requests_counted(server, "digits-lstm", "ok") == ok + 3
    assert requests_counted(server, "digits-lstm", "validation_failed") == bad + 1
    assert batched_images(server, "digits-lstm") >= images + 3 * len(x)


def tensor(shape: list[int], data: Any, datatype: str = "FP32") -> dict[str, Any]:
    """An inference request with one input tensor."""
    return {"inputs": [{"name": "input", "shape": shape, "datatype": datatype, "data": data}]}


ZEROS = [0.0] * 64
GOOD = tensor([1, 1, 8, 8], ZEROS)
INFER = "/v2/models/digits-cnn/infer"

CASES: list[tuple[str, str, str, dict[str, Any], int, str]] = [
    # (id, method, path, httpx keyword arguments, status, part of the message)
    ("unknown model", "POST", "/v2/models/nope/infer", {"json": GOOD}, 404, "not loaded"),
    ("unknown model metadata", "GET", "/v2/models/nope", {}, 404, "not loaded"),
    ("unknown model ready", "GET", "/v2/models/nope/ready", {}, 404, "not loaded"),
    (
        "unknown version",
        "POST",
        "/v2/models/digits-cnn/versions/9/infer",
        {"json": GOOD},
        404,
        "no version 9",
    ),
    (
        "version not a number",
        "POST",
        "/v2/models/digits-cnn/versions/one/infer",
        {"json": GOOD},
        400,
        "positive integer",
    ),
    ("version metadata", "GET", "/v2/models/digits-cnn/versions/v1", {}, 400, "positive integer"),
    ("wrong datatype", "POST", INFER, {"json": tensor([1, 1, 8, 8], [0] * 64, "INT64")}, 400,
     "is FP32, got INT64"),
    ("unknown datatype", "POST", INFER, {"json": tensor([1, 1, 8, 8], ZEROS, "FP99")}, 400,
     "unknown datatype 'FP99'"),
    ("other protocol datatype", "POST", INFER, {"json": tensor([1, 1, 8, 8], ZEROS, "FP16")},
     400, "is FP32, got FP16"),
    ("wrong shape", "POST", INFER, {"json": tensor([1, 1, 8, 9], [0.0] * 72)}, 400, "has shape"),
    ("wrong rank", "POST", INFER, {"json": tensor([64], ZEROS)}, 400, "has shape"),
    ("empty batch", "POST", INFER, {"json": tensor([0, 1, 8, 8], [])}, 400, "at least 1"),
    ("too few values", "POST", INFER, {"json": tensor([1, 1, 8, 8], ZEROS[:63])}, 400, "needs 64"),
    ("too many values", "POST", INFER, {"json": tensor([1, 1, 8, 8], ZEROS * 2)}, 400, "needs 64"),
    ("ragged nesting", "POST", INFER, {"json": tensor([1, 1, 8, 8], [[0.0] * 8] * 7 + [[0.0]])},
     400, "evenly nested"),
    ("strings", "POST", INFER, {"json": tensor([1, 1, 8, 8], ["0"] * 64)}, 400, "numbers"),
    ("booleans", "POST", INFER, {"json": tensor([1, 1, 8, 8], [True] * 64)}, 400, "numbers"),
    ("over FP32", "POST", INFER, {"json": tensor([1, 1, 8, 8], [1e39] * 64)}, 400, "finite"),
    ("unknown input", "POST", INFER,
     {"json": {"inputs": [{**GOOD["inputs"][0], "name": "pixels"}]}}, 400, "one input named"),
    ("two inputs", "POST", INFER, {"json": {"inputs": GOOD["inputs"] * 2}}, 400, "one input"),
    ("no inputs", "POST", INFER, {"json": {"inputs": []}}, 400, "inputs"),
    ("unknown output", "POST", INFER, {"json": {**GOOD, "outputs": [{"name": "probs"}]}}, 400,
     "no output named 'probs'"),
    ("unknown field", "POST", INFER, {"json": {**GOOD, "inptus": []}}, 400, "inptus"),
    ("batch too large", "POST", INFER, {"json": tensor([65, 1, 8, 8], ZEROS * 65)}, 413,
     "at most 64"),
    ("malformed json", "POST", INFER, {"content": b'{"inputs": ['}, 400, "not valid JSON"),
    ("no body", "POST", INFER, {}, 400, "invalid inference request"),
    # The binary extension's framing (tests/e2e/test_v2_binary.py has the rest of its cases).
    ("binary header without inputs", "POST", INFER,
     {"content": b"{}", "headers": {"Inference-Header-Content-Length": "2"}}, 400,
     "inputs: Field required"),
    ("binary header not a number", "POST", INFER,
     {"content": b"{}", "headers": {"Inference-Header-Content-Length": "two"}}, 400,
     "must be a byte count"),
    ("not json", "POST", INFER, {"content": b"x", "headers": {"Content-Type": "text/plain"}}, 415,
     "as JSON"),
    ("unknown path", "GET", "/v2/nothing", {}, 404, "no endpoint at /v2/nothing"),
    ("newline in path", "GET", "/v2/models/digits-cnn%0A", {}, 404, "no endpoint"),
    ("wrong method", "GET", INFER, {}, 405, "method not allowed"),
    ("wrong method metadata", "POST", "/v2/models/digits-cnn", {}, 405, "method not allowed"),
    ("wrong method health", "PUT", "/v2/health/live", {}, 405, "method not allowed"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "method", "path", "kwargs", "status", "message"), CASES, ids=[c[0] for c in CASES]
)
def test_client_errors(
    server: Server,
    name: str,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    message: str,
) -> None:
    r = httpx.request(method, f"{server.url}{path}", timeout=30, **kwargs)
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"], str), body
    assert message in body["error"]


def test_server_stays_ready_and_logs_no_tracebacks(server: Server) -> None:
    for _, method, path, kwargs, _, _ in CASES:
        httpx.request(method, f"{server.url}{path}", timeout=30, **kwargs)
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200
    assert httpx.post(f"{server.url}{INFER}", json=GOOD).status_code == 200
    log = server.log()
    assert "Traceback" not in log, log[-3000:]
    assert "rejected POST /v2/models/digits-cnn/infer: 400" in log


def test_openapi_documents_the_protocol(server: Server) -> None:
    spec = httpx.get(f"{server.url}/docs.json").json()
    infer = spec["paths"]["/v2/models/{model_name}/infer"]["post"]
    assert {"200", "400", "404", "503"} <= set(infer["responses"])
    assert "/v2/models/{model_name}/versions/{model_version}" in spec["paths"]
    assert "InferenceRequest" in spec["components"]["schemas"]
