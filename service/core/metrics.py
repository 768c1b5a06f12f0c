"""The project's Prometheus metrics, per model and version, beside BentoML's own.

prometheus_client is imported when ServiceMetrics is built, not when this module is: BentoML
sets PROMETHEUS_MULTIPROC_DIR in each worker after the service module is imported, and the
client picks its (multi-process) storage at import time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

NAMESPACE = "digitserve"
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
OUTCOMES = (
    "ok",
    "invalid_image",
    "unsupported_media_type",
    "payload_too_large",
    "not_found",
    "validation_failed",
    "overloaded",
    "request_timeout",
    "client_disconnected",
    "error",
)
# The stages of digitserve_stage_seconds, as Triton's statistics extension names them.
STAGES = ("queue", "compute_input", "compute_infer", "compute_output")
# Server-side latency of an admitted request over the latency its admission estimated.
OVERRUN_BUCKETS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)


class ServiceMetrics:
    """Counters and histograms labelled by model and version."""

    def __init__(self, max_batch_size: int, registry: CollectorRegistry | None = None) -> None:
        from prometheus_client import REGISTRY, Counter, Gauge, Histogram

        reg = registry if registry is not None else REGISTRY
        self.registry = reg
        labels = ("model", "version")
        self.requests = Counter(
            "requests",
            "Prediction requests by endpoint and outcome",
            (*labels, "endpoint", "outcome"),
            namespace=NAMESPACE,
            registry=reg,
        )
        self.rejected = Counter(
            "overload_rejections",
            "Requests refused with 503 to protect the latency budget, by reason "
            "(queue_full: the model's queue is full; deadline: it could not be answered in time; "
            "explain_busy: the worker's /explain places are taken)",
            (*labels, "reason"),
            namespace=NAMESPACE,
            registry=reg,
        )
        self.admission_overrun = Histogram(
            "admission_overrun_ratio",
            "Per answered prediction request: the share of the latency budget by which its answer "
            "came later than the admission gate expected (0 when on time); above 0.3, the gate's "
            "margin, an admitted request can miss its budget",
            namespace=NAMESPACE,
            registry=reg,
            buckets=OVERRUN_BUCKETS,
        )
        self.reloads = Counter(
            "reloads",
            "Model repository reloads by outcome (ok, failed: a new version was refused)",
            ("outcome",),
            namespace=NAMESPACE,
            registry=reg,
        )
        self.request_seconds = Histogram(
            "request_seconds", "Time from arrival to answer of successful prediction requests",
            (*labels, "endpoint"), namespace=NAMESPACE, registry=reg, buckets=LATENCY_BUCKETS,
        )  # fmt: skip
        self.stage_seconds = Histogram(
            "stage_seconds",
            "Per answered inference request, the time it spent in each stage: queue (waiting "
            "for its batch to start), compute_input (decode, validate, preprocess), "
            "compute_infer (the onnxruntime calls of its batches), compute_output (postprocess "
            "and encode); as Triton's statistics extension splits it",
            (*labels, "stage"),
            namespace=NAMESPACE,
            registry=reg,
            buckets=LATENCY_BUCKETS,
        )
        self.failure_seconds = Counter(
            "request_failure_seconds",
            "Time from arrival to answer of failed inference requests of a known model",
            labels,
            namespace=NAMESPACE,
            registry=reg,
        )
        self.last_inference = Gauge(
            "last_inference_timestamp_seconds",
            "When the model last answered an inference request (Unix time)",
            labels,
            namespace=NAMESPACE,
            registry=reg,
            multiprocess_mode="max",
        )
        buckets = [1.0]
        while buckets[-1] < max_batch_size:
            buckets.append(min(buckets[-1] * 2, float(max_batch_size)))
        self.batch_images = Histogram(
            "batch_images",
            "Items (images, texts, tensor rows) per onnxruntime call: its count is the calls",
            labels,
            namespace=NAMESPACE,
            registry=reg,
            buckets=buckets,
        )
        self.model_info = Gauge(
            "model_info",
            "Loaded model versions (value 1) with provider, sha256, the data set they were "
            "trained on and their input canonicalisation (none or digits)",
            (*labels, "arch", "provider", "sha256", "dataset", "canonical"),
            namespace=NAMESPACE,
            registry=reg,
            multiprocess_mode="max",
        )
