"""The dataplane under every way in: resolve the model and version, admit, convert the input by
its modality, batch, infer and count.

It knows nothing of HTTP or gRPC. The adapters (service/http/routes/ for REST and the Open
Inference Protocol over REST) decode their wire format into a `Call` and a payload, call this,
and encode what it returns; an `ApiError` it raises is theirs to answer in their own shape.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from service.core.admission import Overloaded, Ticket
from service.core.batching import BatchTiming
from service.core.errors import ApiError, ServiceUnavailable, ValidationFailed
from service.core.explain import Explainer, ImageExplanation, TextExplanation
from service.core.modality import InputLimits, Modality
from service.core.models import LoadedModel
from service.core.postprocess import Prediction, top_k
from service.core.runtime import Runtime
from service.core.text import Text

log = logging.getLogger("digitserve")

T = TypeVar("T")


def not_ready() -> ServiceUnavailable:
    return ServiceUnavailable("not ready: models are still loading", detail={"ready": False})


@dataclass
class Stages:
    """A request's time per stage (digitserve_stage_seconds), added up as it goes; counted only
    for requests that went through a batcher."""

    compute_input: float = 0.0
    compute_output: float = 0.0
    batch: BatchTiming | None = None  # queue and compute_infer, once it joined a batch

    def output_since(self, started: float) -> None:
        self.compute_output += time.perf_counter() - started


@dataclass
class Call:
    """One request as the dataplane sees it, whatever brought it."""

    endpoint: str  # the `endpoint` label of its metrics: its way in, never the client's text
    # When it had arrived whole (perf_counter): its latency budget starts there.
    received: float = field(default_factory=time.perf_counter)
    ticket: Ticket | None = None  # its place in the admission gate, once the transport admitted it
    stages: Stages = field(default_factory=lambda: Stages())  # where its time went

    def elapsed_ms(self) -> float:
        return round((time.perf_counter() - self.received) * 1000, 3)


class DataPlane:
    """One worker's models, admission gate, batchers and metrics, behind one interface."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        settings = runtime.settings  # fixed for the runtime's life: built once, not per request
        self.limits = InputLimits(
            max_bytes=settings.max_upload_bytes,
            max_pixels=settings.max_image_pixels,
            decoder=runtime.decoder,
        )
        self.explainer = Explainer(runtime)

    @property
    def ready(self) -> bool:
        return self.runtime.ready

    # Admission, as the transport sees a request arrive: refuse the hopeless before reading it,
    # admit it once it is whole, and let it go once answered.

    def refuse_if_hopeless(self, arrived: float) -> None:
        self.runtime.admission.check(arrived)

    def enter(self, arrived: float) -> Ticket:
        return self.runtime.admission.enter(arrived)

    def leave(self, ticket: Ticket) -> None:
        self.runtime.admission.leave(ticket)

    def count_unresolved(self, endpoint: str, exc: ApiError) -> None:
        """Count a request answered before its model was known."""
        metrics = self.runtime.metrics
        if isinstance(exc, Overloaded):
            metrics.rejected.labels("unknown", "", exc.reason).inc()
        metrics.requests.labels("unknown", "", endpoint, exc.outcome).inc()

    # Models.

    def resolve(self, name: str | None, version: int | None) -> LoadedModel:
        """The model a request asks for (the default model, its highest version, when it names
        none); 404 with what is available otherwise."""
        return self.runtime.models.resolve(name, version)

    def default_for(self, modality: type[Modality[Any]]) -> str:
        return self.runtime.models.default_for(modality)

    # Inference.

    async def serve(
        self,
        call: Call,
        name: str | None,
        version: int | None,
        work: Callable[[LoadedModel], Awaitable[T]],
        *,
        queued: bool = True,
    ) -> T:
        """Resolve the model a request names and run `work` on it within the model's bounded
        queue (unless not `queued`: /explain has its own limit), counting the request by model,
        version and outcome (an unknown model is counted as "unknown", never the client's
        text)."""
        metrics = self.runtime.metrics
        model_label, version_label = "unknown", ""
        try:
            model = self.resolve(name, version)
            model_label, version_label = model.name, str(model.version)
            if queued:
                with self.runtime.admission.admit(model.key):
                    result = await work(model)
            else:
                result = await work(model)
        except ApiError as exc:
            metrics.requests.labels(model_label, version_label, call.endpoint, exc.outcome).inc()
            if isinstance(exc, Overloaded):
                metrics.rejected.labels(model_label, version_label, exc.reason).inc()
            if version_label:
                metrics.failure_seconds.labels(model_label, version_label).inc(
                    time.perf_counter() - call.received
                )
            raise
        metrics.requests.labels(model_label, version_label, call.endpoint, "ok").inc()
        metrics.request_seconds.labels(model_label, version_label, call.endpoint).observe(
            time.perf_counter() - call.received
        )
        self._count_stages(model, call.stages)
        return result

    def _count_stages(self, model: LoadedModel, stages: Stages) -> None:
        if stages.batch is None:  # it never reached a batcher (/explain, say)
            return
        metrics = self.runtime.metrics
        labels = (model.name, str(model.version))
        for stage, seconds in (
            ("queue", stages.batch.queue_s),
            ("compute_input", stages.compute_input),
            ("compute_infer", stages.batch.infer_s),
            ("compute_output", stages.compute_output),
        ):
            metrics.stage_seconds.labels(*labels, stage).observe(seconds)
        metrics.last_inference.labels(*labels).set(time.time())

    async def to_input(
        self, model: LoadedModel, payload: object, call: Call | None = None
    ) -> NDArray[np.generic]:
        """What a client sent -> the model's input, by its modality, timed as the call's
        compute_input."""
        started = time.perf_counter()
        x = await model.input.to_input(payload, self.limits)
        if call is not None:
            call.stages.compute_input += time.perf_counter() - started
        return x

    async def infer(self, call: Call, model: LoadedModel, x: NDArray[Any]) -> NDArray[np.float32]:
        """Batch `x` with the model's other requests, unless the request's budget is spent, or
        would be by the time answers come from here (then 503 at once: answering it late helps
        no one and delays those behind it)."""
        admission = self.runtime.admission
        admission.check_deadline(call.received, call.ticket)
        if call.ticket is not None:  # the gate counted one item until the request was parsed
            admission.resize(call.ticket, len(x))
        if call.stages.batch is None:
            call.stages.batch = BatchTiming(time.perf_counter())
        return await self.runtime.batcher(model).infer(x, call.stages.batch)

    async def classify(
        self, call: Call, model: LoadedModel, payload: object, k: int
    ) -> list[Prediction]:
        """One input -> the model's k most probable classes."""
        check_top_k(k, model)
        logits = await self.infer(call, model, await self.to_input(model, payload, call))
        started = time.perf_counter()
        ranked = top_k(logits[0], model.manifest.labels, k)
        call.stages.output_since(started)
        return ranked

    # Explanations: within the worker's explain gate, not the predict admission gate.

    async def explain_image(self, model: LoadedModel, payload: bytes, k: int) -> ImageExplanation:
        check_top_k(k, model)
        with self.explainer.gate.enter():
            x = await self.to_input(model, payload)
            return await self.explainer.image(model, x.astype(np.float32, copy=False), k)

    async def explain_text(self, model: LoadedModel, payload: Text, k: int) -> TextExplanation:
        check_top_k(k, model)
        with self.explainer.gate.enter():
            ids = await self.to_input(model, payload)
            return await self.explainer.text(model, ids.astype(np.int64), payload, k)


def check_top_k(k: int, model: LoadedModel) -> None:
    classes = len(model.manifest.labels)
    if not 1 <= k <= classes:
        raise ValidationFailed(
            f"top_k must be between 1 and {classes} for {model.key}",
            detail=[{"field": "top_k", "message": f"must be between 1 and {classes}", "value": k}],
        )
