"""Per model version, what Triton's statistics extension reports: requests that succeeded and
failed, inferences and executions, and the cumulative time of each stage.

The figures are read from the service's Prometheus metrics, so they are the server's, not one
worker's: under BentoML every worker writes its metrics to a shared folder
(PROMETHEUS_MULTIPROC_DIR), and the statistics add them up as /metrics does.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from service.core.metrics import NAMESPACE, STAGES, ServiceMetrics
from service.core.models import LoadedModel

NS = 1_000_000_000


@dataclass
class Duration:
    """How many, and their cumulative time in nanoseconds."""

    count: int = 0
    ns: int = 0


@dataclass
class ModelStatistics:
    name: str
    version: str
    last_inference_ms: int = 0  # Unix time of the last answered inference, 0 before any
    inference_count: int = 0  # items inferred (images, texts, tensor rows)
    execution_count: int = 0  # onnxruntime calls
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    stages: dict[str, Duration] = field(
        default_factory=lambda: {stage: Duration() for stage in STAGES}
    )


def collect(metrics: ServiceMetrics) -> list[tuple[str, dict[str, str], float]]:
    """Every sample of the service's metrics, all workers' added up: (name, labels, value)."""
    registry = metrics.registry
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    from prometheus_client import REGISTRY, CollectorRegistry

    if folder and registry is REGISTRY:
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=folder)
    return [
        (sample.name, sample.labels, sample.value)
        for family in registry.collect()
        if family.name.startswith(NAMESPACE + "_")
        for sample in family.samples
    ]


def model_statistics(
    metrics: ServiceMetrics, models: Iterable[LoadedModel]
) -> list[ModelStatistics]:
    """The statistics of `models`, in their order."""
    wanted = {(m.name, str(m.version)): ModelStatistics(m.name, str(m.version)) for m in models}
    sums: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    prefix = NAMESPACE + "_"
    for name, labels, value in collect(metrics):
        key = (labels.get("model", ""), labels.get("version", ""))
        if key not in wanted:
            continue
        metric = name.removeprefix(prefix)
        if metric == "requests_total" and labels.get("outcome") != "ok":
            metric = "failed_total"
        elif metric.startswith("stage_seconds_"):
            metric = f"{labels['stage']}_{metric.removeprefix('stage_seconds_')}"
        sums[key][metric] += value
    for key, stats in wanted.items():
        got = sums[key]

        def duration(count: str, seconds: str) -> Duration:
            return Duration(int(got[count]), round(got[seconds] * NS))  # noqa: B023

        stats.success = duration("request_seconds_count", "request_seconds_sum")
        stats.fail = duration("failed_total", "request_failure_seconds_total")
        stats.stages = {stage: duration(f"{stage}_count", f"{stage}_sum") for stage in STAGES}
        stats.inference_count = int(got["batch_images_sum"])
        stats.execution_count = int(got["batch_images_count"])
        stats.last_inference_ms = round(got["last_inference_timestamp_seconds"] * 1000)
    return list(wanted.values())
