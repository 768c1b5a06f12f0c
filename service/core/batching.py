"""Adaptive batching per model version with BentoML's dispatcher.

Each loaded model version gets its own `CorkDispatcher` (the adaptive-batching engine behind
BentoML's `batchable=True` APIs), so concurrent requests for the same model share one
onnxruntime call, requests for different models never mix, and arrays stay in memory instead of
being serialised through BentoML's HTTP proxy. Only decoded, validated tensors are submitted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple, NoReturn

import numpy as np
from bentoml._internal.marshal.dispatcher import CorkDispatcher, Optimizer
from numpy.typing import NDArray

from service.core.admission import deadline_error
from service.core.metrics import ServiceMetrics
from service.core.models import LoadedModel


@dataclass
class BatchTiming:
    """Where one request's time went in the batcher: waiting for its first batch to start,
    and in the onnxruntime calls of the batches it was in."""

    submitted: float
    queue_s: float = 0.0
    infer_s: float = 0.0
    started: bool = False


class Item(NamedTuple):
    """One input (an image's (C, H, W) or a text's (T,) token ids) and its request's timing."""

    x: NDArray[np.generic]
    timing: BatchTiming


class BoundedWaitOptimizer(Optimizer):
    """BentoML's dispatcher optimizer with a cap on the wait it learns.

    The optimizer learns how long requests waited before their batch ran, and the dispatcher
    then holds a lone request until that long has passed, and learns that wait again. After
    one overload burst a single client's requests took ~87 ms each, for good (measured here).
    Capping the learned wait breaks the loop; batches still form while one is running.
    """

    def __init__(self, max_latency_s: float, max_wait_s: float) -> None:
        super().__init__(max_latency_s)
        self.max_wait_s = max_wait_s

    def trigger_refresh(self) -> None:
        super().trigger_refresh()
        # BentoML annotates `wait` as int, but it holds seconds as a float.
        self.wait = min(self.wait, self.max_wait_s)  # type: ignore[assignment]


def _overloaded() -> NoReturn:
    # Called by the dispatcher when a queued request has waited past its hard limit.
    raise deadline_error()


class ModelBatcher:
    """Queue images for one model version and run them in adaptive batches."""

    def __init__(
        self,
        model: LoadedModel,
        *,
        max_batch_size: int,
        max_latency_ms: int,
        hard_limit_s: float,
        metrics: ServiceMetrics,
        in_thread: bool = True,
        max_wait_ms: float = 2.0,
    ) -> None:
        self.model = model
        self.max_batch_size = max_batch_size
        self._labels = (model.name, str(model.version))
        self._metrics = metrics
        # One thread per model (the dispatcher runs one batch at a time): onnxruntime releases
        # the GIL, so the event loop keeps parsing requests meanwhile. Inline saves the handoff.
        self._executor = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=model.key) if in_thread else None
        )
        # Lists are batched item by item (BentoML splits a list that does not fit the batch).
        # The dispatcher sheds what it expects to wait past `max_latency_in_ms`, whoever sent
        # it: warm-up and reload warm-up included. Clients' deadlines are the admission gate's
        # (service.core.admission), so the dispatcher sheds only past the hard request timeout.
        self._dispatcher: CorkDispatcher[list[Item], list[NDArray[np.float32]]] = CorkDispatcher(
            max_latency_in_ms=int(hard_limit_s * 1000),
            max_batch_size=max_batch_size,
            fallback=_overloaded,
            get_batch_size=len,
        )
        # The optimizer's first guesses of the batch cost scale with the latency it is given.
        self._dispatcher.optimizer = BoundedWaitOptimizer(max_latency_ms / 1000, max_wait_ms / 1000)
        self._submit = self._dispatcher(self._run_batch)
        self.record_metrics = True  # off while warming up: those calls are not clients'

    async def infer(
        self, x: NDArray[np.generic], timing: BatchTiming | None = None
    ) -> NDArray[np.float32]:
        """(N, ...) inputs -> (N, classes) logits, batched with whatever else is queued; the
        time they waited and ran is added to `timing`."""
        if len(x) == 0:
            # NOTE: onnxruntime aborts the whole process on an empty LSTM batch; never send one.
            raise ValueError("infer() needs at least one image")
        if timing is None:
            timing = BatchTiming(time.perf_counter())
        chunks = [
            [Item(image, timing) for image in x[i : i + self.max_batch_size]]
            for i in range(0, len(x), self.max_batch_size)
        ]
        results = await asyncio.gather(*(self._submit(chunk) for chunk in chunks))
        logits = [row for chunk in results if chunk is not None for row in chunk]
        if len(logits) != len(x):
            raise RuntimeError(f"{self.model.key}: got {len(logits)} results for {len(x)} images")
        return np.stack(logits)

    async def _run_batch(self, jobs: Sequence[list[Item]]) -> list[list[NDArray[np.float32]]]:
        """The dispatcher's callback: one onnxruntime call for every queued item."""
        started = time.perf_counter()
        items = [item for job in jobs for item in job]
        x = np.stack([item.x for item in items])  # (B, C, H, W) or (B, T)
        if self._executor is not None:
            loop = asyncio.get_running_loop()
            logits = await loop.run_in_executor(self._executor, self.model.run, x)
        else:
            logits = self.model.run(x)
        took = time.perf_counter() - started
        for timing in {id(item.timing): item.timing for item in items}.values():
            if not timing.started:
                timing.started = True
                timing.queue_s = started - timing.submitted
            timing.infer_s += took
        if self.record_metrics:
            self._metrics.batch_images.labels(*self._labels).observe(len(items))
        if len(logits) != len(items):  # list in, list out: checked loudly
            raise RuntimeError(
                f"{self.model.key}: onnxruntime returned {len(logits)} rows for {len(items)} images"
            )
        out: list[list[NDArray[np.float32]]] = []
        start = 0
        for job in jobs:
            out.append(list(logits[start : start + len(job)]))
            start += len(job)
        return out

    def close(self) -> None:
        self._dispatcher.shutdown()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
