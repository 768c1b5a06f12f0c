"""Everything a worker serves with: settings, loaded models, their batchers, metrics, readiness."""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import TYPE_CHECKING

import numpy as np

from service.batching import ModelBatcher
from service.metrics import ServiceMetrics
from service.models import LoadedModel, ModelRegistry, load_registry
from service.settings import ServiceSettings

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger("digitserve")

# Requests sent through each batcher before the service reports ready: BentoML's dispatcher
# learns its latency model from its first batches, and those should not be a client's.
DISPATCHER_WARMUP_REQUESTS = 12


class Runtime:
    def __init__(self, settings: ServiceSettings, registry: CollectorRegistry | None = None):
        self.settings = settings
        self.models: ModelRegistry = load_registry(settings)
        self.metrics = ServiceMetrics(settings.max_batch_size, registry)
        self.batchers: dict[str, ModelBatcher] = {}
        self.ready = False
        for model in self.models:
            self.metrics.model_info.labels(
                model.name,
                str(model.version),
                model.manifest.arch,
                model.provider,
                model.manifest.sha256,
            ).set(1)
            self._warm_session(model)

    def _warm_session(self, model: LoadedModel) -> None:
        """Run the session at a few batch sizes so the first requests do not pay for it."""
        shape = model.manifest.input.shape[1:]
        for n in self.settings.warmup_batch_sizes:
            logits = model.run(np.zeros((n, *shape), dtype=np.float32))
            if logits.shape != (n, len(model.manifest.labels)):
                raise RuntimeError(f"{model.key}: warm-up at batch {n} gave {logits.shape}")

    async def start(self) -> None:
        """Create the batchers in the running event loop, warm them, then report ready."""
        for model in self.models:
            self.batchers[model.key] = ModelBatcher(
                model,
                max_batch_size=self.settings.max_batch_size,
                max_latency_ms=self.settings.max_latency_ms,
                metrics=self.metrics,
                in_thread=self.settings.inference_thread,
                max_wait_ms=self.settings.max_batch_wait_ms,
            )
        for batcher in self.batchers.values():
            batcher.record_metrics = False
            x = np.zeros((1, *batcher.model.manifest.input.shape[1:]), dtype=np.float32)
            for _ in range(DISPATCHER_WARMUP_REQUESTS):
                await batcher.infer(x)
            await asyncio.gather(*(batcher.infer(x) for _ in range(8)))
            batcher.record_metrics = True
        # Everything loaded so far lives as long as the process: keep it out of the cyclic
        # garbage collector's scans, which otherwise show up as latency spikes under load.
        gc.collect()
        gc.freeze()
        self.ready = True
        log.info("ready: %s", ", ".join(self.batchers))

    async def stop(self) -> None:
        self.ready = False
        for batcher in self.batchers.values():
            batcher.close()

    def batcher(self, model: LoadedModel) -> ModelBatcher:
        return self.batchers[model.key]
