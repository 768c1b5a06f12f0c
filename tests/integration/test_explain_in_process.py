"""/explain in-process over the real bundled models: its own concurrency limit, its place outside
the predict admission gate, and a manifest without explain outputs."""

import asyncio

import httpx
from prometheus_client import CollectorRegistry

from service.core.runtime import Runtime
from tests.helpers import ROOT
from tests.integration.test_app_in_process import run_with_app, sample

SEVEN = (ROOT / "examples" / "mnist" / "7.png").read_bytes()


def test_explain_past_the_workers_limit_is_refused_with_503_and_counted() -> None:
    async def check(client: httpx.AsyncClient, runtime: Runtime, reg: CollectorRegistry) -> None:
        version = str(runtime.models.resolve("mnist-cnn", None).version)
        answers = await asyncio.gather(
            *(client.post("/explain", files={"image": SEVEN}) for _ in range(6))
        )
        codes = sorted(r.status_code for r in answers)
        assert 200 in codes and 503 in codes, codes
        assert set(codes) == {200, 503}, codes
        refused = next(r for r in answers if r.status_code == 503)
        assert refused.headers["retry-after"].isdigit()
        assert refused.json()["detail"]["reason"] == "explain_busy"
        assert refused.json()["detail"]["limit"] == 1
        labels = {"model": "mnist-cnn", "version": version}
        ok = sample(reg, "digitserve_requests_total", endpoint="/explain", outcome="ok", **labels)
        busy = sample(reg, "digitserve_overload_rejections_total", reason="explain_busy", **labels)
        assert ok == codes.count(200) and busy == codes.count(503)
        # Places are given back: one at a time, every explanation is answered.
        for _ in range(3):
            assert (await client.post("/explain", files={"image": SEVEN})).status_code == 200

    run_with_app(check, explain_concurrency=1)


def test_explain_stays_out_of_the_predict_admission_gate() -> None:
    async def check(client: httpx.AsyncClient, runtime: Runtime, reg: CollectorRegistry) -> None:
        gate = runtime.admission
        before = gate.samples
        assert (await client.post("/explain", files={"image": SEVEN})).status_code == 200
        assert (await client.post("/explain/text", json={"text": "the match"})).status_code == 200
        assert gate.samples == before and gate.in_flight == 0
        assert (await client.post("/predict", files={"image": SEVEN})).status_code == 200
        assert gate.samples == before + 1  # the gate does count /predict

    run_with_app(check)


def test_a_manifest_without_explain_outputs_gets_occlusion_only() -> None:
    async def check(client: httpx.AsyncClient, runtime: Runtime, reg: CollectorRegistry) -> None:
        model = runtime.models.resolve("mnist-cnn", 1)
        assert model.manifest.explain is None  # version 1 was exported before explain outputs
        r = await client.post("/explain", files={"image": SEVEN}, data={"version": "1"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["version"] == 1
        assert body["activations"] == [] and body["filters_png"] is None
        assert body["predictions"][0]["label"] == "7"
        assert len(body["occlusion"]["grid"]) == 8  # 28 px, patch 7, stride 3
        predicted = await client.post("/predict", files={"image": SEVEN}, data={"version": "1"})
        assert predicted.json()["predictions"] == body["predictions"]

    run_with_app(check, models=["mnist-cnn:1", "text-topics"])
