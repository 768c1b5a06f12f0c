"""The API app in-process over the real bundled models, with many concurrent requests."""

import asyncio
import time
from collections.abc import Awaitable, Callable

import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from modelrepo.layout import list_versions
from service.core.admission import MIN_SAMPLES
from service.core.runtime import Runtime
from service.http.app import create_app
from service.settings import ServiceSettings
from tests.helpers import EXPORTS, ROOT, digits_test_pngs

SEVEN = (ROOT / "examples" / "digits" / "7.png").read_bytes()


def run_with_app(
    check: Callable[[httpx.AsyncClient, Runtime, CollectorRegistry], Awaitable[None]],
    *,
    start: bool = True,
    **settings: object,
) -> None:
    """Build a Runtime on the real exports, start it, and hand a client for its app to `check`."""

    async def main() -> None:
        registry = CollectorRegistry()
        runtime = Runtime(ServiceSettings(model_repo=EXPORTS, **settings), registry)  # type: ignore[arg-type]
        if start:
            await runtime.start()
        transport = httpx.ASGITransport(app=create_app(runtime))
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
                await check(client, runtime, registry)
        finally:
            await runtime.stop()

    asyncio.run(main())


# The 8x8 digits test split is what scikit-learn's digits model answers exactly.
DIGITS_CNN = {"model": "digits-cnn"}
# Requests without a version go to the latest one: the metrics are labelled with it.
DIGITS_CNN_METRICS = {
    "model": "digits-cnn",
    "version": str(list_versions(EXPORTS, "digits-cnn")[-1]),
}


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


@pytest.mark.parametrize("inference_thread", [False, True])
def test_concurrent_requests_are_batched_into_fewer_onnxruntime_calls(
    inference_thread: bool,
) -> None:
    pngs, labels = digits_test_pngs()

    async def check(client: httpx.AsyncClient, runtime: Runtime, reg: CollectorRegistry) -> None:
        responses = await asyncio.gather(
            *(
                client.post("/predict", files={"image": png}, data={"top_k": "1", **DIGITS_CNN})
                for png in pngs
            )
        )
        assert all(r.status_code == 200 for r in responses), {
            r.status_code: r.text for r in responses
        }
        predicted = [int(r.json()["predictions"][0]["label"]) for r in responses]
        assert sum(p == y for p, y in zip(predicted, labels, strict=True)) / len(labels) > 0.97
        m = DIGITS_CNN_METRICS
        calls = sample(reg, "digitserve_batch_images_count", **m)
        images = sample(reg, "digitserve_batch_images_sum", **m)
        single = sample(reg, "digitserve_batch_images_bucket", le="1.0", **m)
        assert images == len(pngs)
        assert calls < images / 4, f"{images} images in {calls} onnxruntime calls"
        assert single < calls
        assert sample(
            reg, "digitserve_requests_total", endpoint="/predict", outcome="ok", **m
        ) == len(pngs)

    # 360 requests at once: a budget and a queue they all fit in (refusals are tested below).
    run_with_app(check, max_latency_ms=60_000, max_queue=1024, inference_thread=inference_thread)


def test_a_bad_request_never_fails_the_others_in_its_batch() -> None:
    async def check(client: httpx.AsyncClient, runtime: Runtime, reg: CollectorRegistry) -> None:
        bodies = [SEVEN] * 31 + [b"\x89PNG\r\n\x1a\ncorrupt"] + [SEVEN] * 31
        responses = await asyncio.gather(
            *(client.post("/predict", files={"image": b}) for b in bodies)
        )
        statuses = [r.status_code for r in responses]
        assert statuses.count(200) == 62 and statuses[31] == 400
        assert all(
            r.json()["predictions"][0]["label"] == "7" for r in responses if r.status_code == 200
        )

    run_with_app(check)


def test_not_ready_answers_503_with_retry_after() -> None:
    async def check(client: httpx.AsyncClient, runtime: Runtime, reg: CollectorRegistry) -> None:
        for response in (
            await client.get("/readyz"),
            await client.post("/predict", files={"image": SEVEN}),
        ):
            assert response.status_code == 503
            assert response.headers["retry-after"] == "1"
            assert response.json()["error"].startswith("not ready")
        assert (await client.get("/livez")).status_code == 200

    run_with_app(check, start=False)


async def seconds_per_request(client: httpx.AsyncClient, requests: int = 40) -> float:
    """This machine's time for one /predict in-process, measured now (sequentially)."""
    started = time.perf_counter()
    for _ in range(requests):
        assert (await client.post("/predict", files={"image": SEVEN})).status_code == 200
    return (time.perf_counter() - started) / requests


def test_overload_is_shed_at_once_with_503_and_retry_after() -> None:
    # A burst of 400 requests at once against a budget that holds about a tenth of them, as
    # measured on this machine: what would wait longer is refused, and those clients hear so
    # at once, in the API's shape.
    async def check(client: httpx.AsyncClient, runtime: Runtime, reg: CollectorRegistry) -> None:
        runtime.admission.budget_s = 40 * await seconds_per_request(client)
        assert runtime.admission.samples >= MIN_SAMPLES  # the gate learnt from those requests
        responses = await asyncio.gather(
            *(client.post("/predict", files={"image": SEVEN}) for _ in range(400))
        )
        shed = [r for r in responses if r.status_code == 503]
        assert shed, "nothing was shed"
        assert {r.status_code for r in responses} <= {200, 503}
        assert len(shed) < len(responses), "nothing was admitted"
        for r in shed:
            assert r.headers["retry-after"] == "1"
            assert r.json()["detail"]["reason"] in ("deadline", "queue_full")
        # Refused at the gate (before the model is known) or later, before batching.
        overloaded = sum(
            sample(
                reg,
                "digitserve_requests_total",
                model=model,
                version=version,
                endpoint="/predict",
                outcome="overloaded",
            )
            for model, version in (("digits-cnn", "1"), ("unknown", ""))
        )
        assert overloaded == len(shed)

    run_with_app(check)


def test_warm_up_is_never_held_to_a_client_budget() -> None:
    # Warm-up sends requests through the batchers before the service is ready: with a budget
    # no request could meet, the runtime still starts, and clients are the ones refused.
    async def check(client: httpx.AsyncClient, runtime: Runtime, reg: CollectorRegistry) -> None:
        assert runtime.ready  # start() warmed every batcher (it raised Overloaded before)
        assert (await client.get("/readyz")).status_code == 200
        for _ in range(5):
            r = await client.post("/predict", files={"image": SEVEN})
            assert r.status_code in (200, 503), r.text

    run_with_app(check, max_latency_ms=1)


def test_batch_endpoint_larger_than_max_batch_size_is_split_and_reassembled() -> None:
    pngs, _ = digits_test_pngs()

    async def check(client: httpx.AsyncClient, runtime: Runtime, reg: CollectorRegistry) -> None:
        r = await client.post(
            "/predict/batch",
            files=[("images", p) for p in pngs[:40]],
            data={"top_k": "1", **DIGITS_CNN},
        )
        assert r.status_code == 200, r.text
        got = [int(x["predictions"][0]["label"]) for x in r.json()["results"]]
        direct = await asyncio.gather(
            *(client.post("/predict", files={"image": p}, data=DIGITS_CNN) for p in pngs[:40])
        )
        assert got == [int(d.json()["predictions"][0]["label"]) for d in direct]
        m = DIGITS_CNN_METRICS
        assert sample(reg, "digitserve_batch_images_sum", **m) == 80
        calls = sample(reg, "digitserve_batch_images_count", **m)
        assert sample(reg, "digitserve_batch_images_bucket", le="8.0", **m) == calls  # all <= 8
        assert calls >= 10  # 80 images, at most 8 per call

    run_with_app(check, max_batch_size=8)


def test_an_empty_batch_never_reaches_onnxruntime() -> None:
    # onnxruntime aborts the process on an empty LSTM batch, so the batcher refuses one.
    async def check(client: httpx.AsyncClient, runtime: Runtime, reg: CollectorRegistry) -> None:
        for batcher in runtime.batchers.values():
            with pytest.raises(ValueError, match="at least one image"):
                await batcher.infer(np.zeros((0, 1, 8, 8), dtype=np.float32))
        r = await client.post("/predict/batch", data={"model": "digits-lstm"})
        assert r.status_code == 422 and r.json()["detail"][0]["field"] == "images"

    run_with_app(check)


def test_latency_recovers_after_an_overload_burst() -> None:
    # BentoML's dispatcher learns how long requests waited for their batch, then holds a lone
    # request that long, and learns that wait again: after bursts like these one client's
    # requests took ~87 ms each, for good. The service caps the learned wait.
    async def check(client: httpx.AsyncClient, runtime: Runtime, reg: CollectorRegistry) -> None:
        optimizer = runtime.batchers["digits-cnn:1"]._dispatcher.optimizer
        before = await median_latency(client)
        for _ in range(3):
            await asyncio.gather(*(client.post("/predict", files={"image": SEVEN})
                                   for _ in range(1500)))  # fmt: skip
            optimizer.trigger_refresh()  # what the dispatcher does every 5 s under load
        assert optimizer.wait <= runtime.settings.max_batch_wait_ms / 1000
        latencies = await single_latencies(client)
        # The learnt wait would hold each lone request ~87 ms; capped, a lone request takes
        # what it took before the bursts (measured first), plus at most the capped wait.
        median = sorted(latencies)[len(latencies) // 2]
        cap_s = runtime.settings.max_batch_wait_ms / 1000
        assert median <= 3 * before + 2 * cap_s, (median, before)

    run_with_app(check)


async def single_latencies(client: httpx.AsyncClient, requests: int = 30) -> list[float]:
    """Seconds per /predict, one request at a time."""
    latencies = []
    for _ in range(requests):
        started = time.perf_counter()
        r = await client.post("/predict", files={"image": SEVEN})
        latencies.append(time.perf_counter() - started)
        assert r.status_code == 200
    return latencies


async def median_latency(client: httpx.AsyncClient) -> float:
    latencies = await single_latencies(client)
    return sorted(latencies)[len(latencies) // 2]
