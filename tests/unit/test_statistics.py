"""The statistics extension's figures (service/core/statistics.py) from the service's own
metrics: on a private registry, and under prometheus_client's multi-process mode (BentoML's
workers) added up over the processes that wrote them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from prometheus_client import CollectorRegistry

from service.core.metrics import STAGES, ServiceMetrics
from service.core.models import LoadedModel
from service.core.statistics import NS, Duration, ModelStatistics, model_statistics
from tests.helpers import ROOT


def model(name: str, version: int) -> LoadedModel:
    """What model_statistics reads of a loaded model: its name and version."""
    return cast(LoadedModel, SimpleNamespace(name=name, version=version))


def fresh() -> ServiceMetrics:
    return ServiceMetrics(64, CollectorRegistry())


def test_stages_are_tritons() -> None:
    assert STAGES == ("queue", "compute_input", "compute_infer", "compute_output")


def test_a_model_without_traffic_has_zeros() -> None:
    [stats] = model_statistics(fresh(), [model("digits-cnn", 1)])
    assert stats == ModelStatistics("digits-cnn", "1")
    assert stats.last_inference_ms == stats.inference_count == stats.execution_count == 0
    assert stats.success == stats.fail == Duration(0, 0)
    assert stats.stages == {stage: Duration(0, 0) for stage in STAGES}


def record(metrics: ServiceMetrics, name: str, version: str) -> None:
    """Three answered requests (two of them batched together), two failed ones."""
    for endpoint, seconds in (("/v2/infer", 0.25), ("/v2/infer", 0.5), ("/predict", 0.125)):
        metrics.requests.labels(name, version, endpoint, "ok").inc()
        metrics.request_seconds.labels(name, version, endpoint).observe(seconds)
        for stage, share in zip(STAGES, (0.125, 0.25, 0.5, 0.0625), strict=True):
            metrics.stage_seconds.labels(name, version, stage).observe(seconds * share)
    for outcome in ("validation_failed", "overloaded"):
        metrics.requests.labels(name, version, "/v2/infer", outcome).inc()
    metrics.failure_seconds.labels(name, version).inc(0.0625)
    metrics.failure_seconds.labels(name, version).inc(0.03125)
    metrics.batch_images.labels(name, version).observe(5)  # the two batched /v2 requests
    metrics.batch_images.labels(name, version).observe(1)
    metrics.last_inference.labels(name, version).set(1_700_000_000.1234)


def expected(name: str, version: str) -> ModelStatistics:
    total = 0.25 + 0.5 + 0.125
    return ModelStatistics(
        name=name,
        version=version,
        last_inference_ms=1_700_000_000_123,
        inference_count=6,
        execution_count=2,
        success=Duration(3, round(total * NS)),
        fail=Duration(2, round(0.09375 * NS)),
        stages={
            stage: Duration(3, round(total * share * NS))
            for stage, share in zip(STAGES, (0.125, 0.25, 0.5, 0.0625), strict=True)
        },
    )


def test_figures_per_version_in_the_order_asked() -> None:
    metrics = fresh()
    record(metrics, "mnist-cnn", "2")
    # Traffic of other versions, other models and unresolved requests stays out.
    metrics.requests.labels("mnist-cnn", "1", "/v2/infer", "ok").inc()
    metrics.request_seconds.labels("mnist-cnn", "1", "/v2/infer").observe(1.0)
    metrics.stage_seconds.labels("mnist-cnn", "1", "queue").observe(1.0)
    metrics.batch_images.labels("mnist-cnn", "1").observe(3)
    metrics.requests.labels("unknown", "", "/v2/infer", "not_found").inc()
    metrics.reloads.labels("ok").inc()
    asked = [model("text-topics", 1), model("mnist-cnn", 2), model("mnist-cnn", 1)]
    text, two, one = model_statistics(metrics, asked)
    assert text == ModelStatistics("text-topics", "1")
    assert two == expected("mnist-cnn", "2")
    assert one.success == Duration(1, NS) and one.fail == Duration(0, 0)
    assert one.stages["queue"] == Duration(1, NS)
    assert one.stages["compute_infer"] == Duration(0, 0)
    assert (one.inference_count, one.execution_count, one.last_inference_ms) == (3, 1, 0)
    assert model_statistics(metrics, []) == []


def test_the_figures_grow_with_the_traffic() -> None:
    metrics = fresh()
    record(metrics, "digits-lstm", "1")
    record(metrics, "digits-lstm", "1")
    [stats] = model_statistics(metrics, [model("digits-lstm", 1)])
    once = expected("digits-lstm", "1")
    assert stats.success == Duration(6, 2 * once.success.ns)
    assert stats.fail == Duration(4, 2 * once.fail.ns)
    assert stats.stages == {s: Duration(6, 2 * d.ns) for s, d in once.stages.items()}
    assert (stats.inference_count, stats.execution_count) == (12, 4)
    assert stats.last_inference_ms == once.last_inference_ms  # a time, not a sum


WORKER = """
import sys
from service.core.metrics import ServiceMetrics
from tests.unit.test_statistics import record
metrics = ServiceMetrics(64)  # the default registry: multi-process storage
record(metrics, "digits-cnn", "2")
metrics.last_inference.labels("digits-cnn", "2").set(float(sys.argv[1]))
"""
READER = """
import json
from types import SimpleNamespace
from service.core.metrics import ServiceMetrics
from service.core.statistics import model_statistics
metrics = ServiceMetrics(64)
[stats] = model_statistics(metrics, [SimpleNamespace(name="digits-cnn", version=2)])
print(json.dumps({"success": vars(stats.success), "fail": vars(stats.fail),
                  "stages": {k: vars(v) for k, v in stats.stages.items()},
                  "inference_count": stats.inference_count,
                  "execution_count": stats.execution_count, "last": stats.last_inference_ms}))
"""


def test_workers_figures_are_added_up(tmp_path: Path) -> None:
    """As under BentoML: each worker process writes its own files in PROMETHEUS_MULTIPROC_DIR,
    and whichever process answers reads them all."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for when in ("1700000000.5", "1700000003.25"):  # two workers, one after the other
        subprocess.run([sys.executable, "-c", WORKER, when], cwd=ROOT, env=env, check=True,
                       timeout=60)  # fmt: skip
    assert len(list(tmp_path.glob("*.db"))) >= 2  # one set of files per worker
    out = subprocess.run([sys.executable, "-c", READER], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    got: dict[str, Any] = json.loads(out.stdout)
    once = expected("digits-cnn", "2")
    assert got["success"] == {"count": 6, "ns": 2 * once.success.ns}
    assert got["fail"] == {"count": 4, "ns": 2 * once.fail.ns}
    assert got["stages"] == {s: {"count": 6, "ns": 2 * d.ns} for s, d in once.stages.items()}
    assert (got["inference_count"], got["execution_count"]) == (12, 4)
    assert got["last"] == 1_700_000_003_250  # the latest of the workers' times
