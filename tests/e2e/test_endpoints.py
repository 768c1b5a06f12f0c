"""Every endpoint of a real server process, as a client sees it."""

import base64
import re
import subprocess
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelrepo.layout import list_models, list_versions
from tests.helpers import EXPORTS, ROOT, Server, required_tool

SEVEN = (ROOT / "examples" / "digits" / "7.png").read_bytes()


def test_probes(server: Server) -> None:
    assert httpx.get(f"{server.url}/livez").json() == {"status": "ok"}
    ready = httpx.get(f"{server.url}/readyz").json()
    # Every version in the repository is served (DIGITSERVE_VERSIONS=all).
    served = [f"{m}:{v}" for m in list_models(EXPORTS) for v in list_versions(EXPORTS, m)]
    assert ready == {"ready": True, "models": sorted(served)}
    assert {"mnist-cnn:1", "mnist-cnn:2", "text-topics:1"} <= set(served)


def test_models(server: Server) -> None:
    body = httpx.get(f"{server.url}/models").json()
    assert body["default_model"] == "mnist-cnn"
    by_name = {m["name"]: m for m in body["models"]}
    assert set(by_name) == {"digits-cnn", "digits-lstm", "mnist-cnn", "mnist-lstm", "text-topics"}
    assert by_name["mnist-cnn"]["default"] and not by_name["digits-cnn"]["default"]
    text = by_name["text-topics"]
    assert text["task"] == "text-classification" and text["preprocessing"]["kind"] == "text"
    assert text["input"]["dtype"] == "int64" and text["input"]["shape"] == [-1, -1]
    cnn = by_name["digits-cnn"]
    assert cnn["provider"] == "CPUExecutionProvider"
    assert cnn["input"] == {
        "name": "input",
        "dtype": "float32",
        "shape": [-1, 1, 8, 8],
        "layout": "NCHW",
    }
    assert cnn["labels"] == [str(i) for i in range(10)]
    assert cnn["test_accuracy"] >= 0.97 and cnn["latest"]
    assert len(cnn["sha256"]) == 64 and cnn["preprocessing"]["color"] == "L"


@pytest.mark.parametrize("model", ["digits-cnn", "digits-lstm"])
def test_predict(server: Server, model: str) -> None:
    r = httpx.post(
        f"{server.url}/predict",
        files={"image": ("7.png", SEVEN, "image/png")},
        data={"model": model, "top_k": "3"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == model and body["version"] == list_versions(EXPORTS, model)[-1]
    assert body["predictions"][0]["label"] == "7"
    assert len(body["predictions"]) == 3
    probabilities = [p["probability"] for p in body["predictions"]]
    assert probabilities == sorted(probabilities, reverse=True)
    assert body["latency_ms"] > 0


def test_predict_defaults_to_default_model_latest_version_top3(server: Server) -> None:
    body = httpx.post(f"{server.url}/predict", files={"image": SEVEN}).json()
    latest = list_versions(EXPORTS, "mnist-cnn")[-1]
    assert (body["model"], body["version"], len(body["predictions"])) == ("mnist-cnn", latest, 3)
    assert body["predictions"][0]["label"] == "7"  # an 8x8 digit, canonicalised


def test_predict_json(server: Server) -> None:
    r = httpx.post(
        f"{server.url}/predict/json",
        json={
            "image_base64": base64.b64encode(SEVEN).decode(),
            "top_k": 1,
            "model": "digits-lstm",
            "version": 1,
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0]["label"] == "7"
    assert len(r.json()["predictions"]) == 1


def test_predict_batch_keeps_order(server: Server) -> None:
    digits = [3, 1, 4, 1, 5, 9, 2, 6]
    files = [
        ("images", (f"{d}.png", (ROOT / f"examples/digits/{d}.png").read_bytes(), "image/png"))
        for d in digits
    ]
    r = httpx.post(f"{server.url}/predict/batch", files=files, data={"top_k": "2"})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["index"] for x in results] == list(range(len(digits)))
    assert [x["filename"] for x in results] == [f"{d}.png" for d in digits]
    assert [x["predictions"][0]["label"] for x in results] == [str(d) for d in digits]
    assert all(len(x["predictions"]) == 2 for x in results)


STAGES = ("queue", "compute_input", "compute_infer", "compute_output")


def stage_samples(text: str, model: str, version: int, suffix: str) -> dict[str, float]:
    """digitserve_stage_seconds_<suffix> of one model version per stage, summed over workers."""
    out = dict.fromkeys(STAGES, 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == f"digitserve_stage_seconds_{suffix}" and (
                labels.get("model"),
                labels.get("version"),
            ) == (model, str(version)):
                out[labels["stage"]] += sample.value
    return out


def test_metrics_are_exposed_and_promtool_clean(server: Server, tmp_path: Path) -> None:
    latest = list_versions(EXPORTS, "mnist-cnn")[-1]
    before = httpx.get(f"{server.url}/metrics").text
    assert httpx.post(f"{server.url}/predict", files={"image": SEVEN}).status_code == 200
    assert httpx.post(f"{server.url}/predict", files={"image": b"nope"}).status_code == 415
    text = httpx.get(f"{server.url}/metrics").text
    for name in (
        "digitserve_requests_total",
        "digitserve_stage_seconds_bucket",
        "digitserve_batch_images_bucket",
        "digitserve_request_failure_seconds_total",
        "digitserve_last_inference_timestamp_seconds",
        "digitserve_model_info",
        "bentoml_service_request_duration_seconds_bucket",
    ):
        assert name in text, name
    for removed in ("preprocess_seconds", "inference_seconds", "queue_wait_seconds"):
        assert f"digitserve_{removed}" not in text, removed
    # The answered prediction is one observation of each stage (tests run one at a time); the
    # refused one never reached a batcher, so it is none.
    counts = [stage_samples(t, "mnist-cnn", latest, "count") for t in (before, text)]
    assert {s: counts[1][s] - counts[0][s] for s in STAGES} == dict.fromkeys(STAGES, 1.0)
    sums = [stage_samples(t, "mnist-cnn", latest, "sum") for t in (before, text)]
    for stage in ("compute_input", "compute_infer"):  # a decode and an onnxruntime call
        assert sums[1][stage] > sums[0][stage], stage
    assert 'outcome="ok"' in text and 'outcome="unsupported_media_type"' in text
    # The API's paths skip BentoML's router, not its request metrics.
    for code in ("200", "415"):
        labels = rf'[^}}]*endpoint="/predict"[^}}]*http_response_code="{code}"'
        assert re.search(r"bentoml_service_request_total\{" + labels, text), code
    assert 'provider="CPUExecutionProvider"' in text
    promtool = required_tool("promtool")
    (tmp_path / "metrics.txt").write_text(text)
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, text=True, capture_output=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_openapi_documents_every_endpoint_with_examples(server: Server) -> None:
    spec = httpx.get(f"{server.url}/docs.json").json()
    for path in ("/predict", "/predict/batch", "/predict/json", "/models", "/livez", "/readyz"):
        assert path in spec["paths"], path
    predict = spec["paths"]["/predict"]["post"]
    assert {"200", "400", "404", "413", "415", "422", "503"} <= set(predict["responses"])
    schemas = spec["components"]["schemas"]
    for field in ("model", "version", "predictions", "latency_ms"):
        prop = schemas["PredictResponse"]["properties"][field]
        assert prop.get("description") or prop.get("examples"), field
    assert httpx.get(f"{server.url}/").status_code == 200  # the OpenAPI page
