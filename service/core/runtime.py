"""Everything a worker serves with: settings, loaded models, their batchers, metrics, readiness,
and reloads of the model repository."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from service.core.admission import Admission
from service.core.batching import ModelBatcher
from service.core.lifecycle import Roster
from service.core.metrics import ServiceMetrics
from service.core.models import (
    CUDA,
    LoadedModel,
    ModelRegistry,
    StartupError,
    load_model,
    load_registry,
    resolve_specs,
)
from service.settings import ServiceSettings

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger("digitserve")

# Requests sent through each batcher before the service reports ready: BentoML's dispatcher
# learns its latency model from its first batches, and those should not be a client's.
DISPATCHER_WARMUP_REQUESTS = 12
# How often a worker looks for a reload request from another worker (a file's mtime).
RELOAD_CHECK_S = 0.5


@dataclass
class ReloadResult:
    """What one worker's reload did."""

    loaded: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # "name:version" -> why


def inference_in_thread(settings: ServiceSettings, model: LoadedModel) -> bool:
    """DIGITSERVE_INFERENCE_THREAD, or when unset: a thread for a model on a GPU (measured on an
    H100, 2 workers: 1,543 against 893 requests/s inline, where the event loop waits out each
    call), inline on the CPU (a small model's call costs less than the handoff)."""
    if settings.inference_thread is not None:
        return settings.inference_thread
    return model.provider == CUDA


class Listener(Protocol):
    """Another way in that the worker serves beside its HTTP API (gRPC): started once the
    models are warm, stopped before they are."""

    name: str
    serving: bool

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Runtime:
    def __init__(self, settings: ServiceSettings, registry: CollectorRegistry | None = None):
        self.settings = settings
        self.models: ModelRegistry = load_registry(settings)
        self.metrics = ServiceMetrics(settings.max_batch_size, registry)
        self.admission = Admission(
            budget_s=settings.max_latency_ms / 1000,
            max_queue=settings.max_queue,
            on_overrun=self.metrics.admission_overrun.observe,
        )
        self.roster = Roster(settings.runtime_dir, settings.workers)
        self.batchers: dict[str, ModelBatcher] = {}
        # One thread per worker decodes the costly images (service.core.image).
        self.decoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode")
        self.worker_index: int | None = None  # BentoML's worker number, set by the service
        self.listeners: list[Listener] = []  # started by the HTTP app's lifespan
        self.ready = False
        self._reload_lock = asyncio.Lock()
        # Versions that failed to load, with their files' signature: retried once they change.
        self._refused: dict[str, tuple[int, ...]] = {}
        self._reload_generation = self.roster.reload_generation()
        self._watcher: asyncio.Task[None] | None = None
        for model in self.models:
            self._describe(model)
            self._warm_session(model)

    def _describe(self, model: LoadedModel) -> None:
        self.metrics.model_info.labels(
            model.name,
            str(model.version),
            model.manifest.arch,
            model.provider,
            model.manifest.sha256,
            model.manifest.training.dataset,
            model.input.canonicalisation,
        ).set(1)

    def _warm_session(self, model: LoadedModel) -> None:
        """Run the session at a few batch sizes so the first requests do not pay for it."""
        for n in self.settings.warmup_batch_sizes:
            logits = model.run(model.input.blank(n))
            if logits.shape != (n, len(model.manifest.labels)):
                raise RuntimeError(f"{model.key}: warm-up at batch {n} gave {logits.shape}")

    async def _new_batcher(self, model: LoadedModel) -> ModelBatcher:
        """A batcher for `model`, warmed so BentoML's dispatcher has learnt its latency."""
        batcher = ModelBatcher(
            model,
            max_batch_size=self.settings.max_batch_size,
            max_latency_ms=self.settings.max_latency_ms,
            hard_limit_s=self.settings.request_timeout_s,
            metrics=self.metrics,
            in_thread=inference_in_thread(self.settings, model),
            max_wait_ms=self.settings.max_batch_wait_ms,
        )
        batcher.record_metrics = False
        x = model.input.blank(1)
        for _ in range(DISPATCHER_WARMUP_REQUESTS):
            await batcher.infer(x)
        await asyncio.gather(*(batcher.infer(x) for _ in range(8)))
        batcher.record_metrics = True
        return batcher

    async def start(self) -> None:
        """Create the batchers in the running event loop, warm them, then report ready."""
        for model in self.models:
            self.batchers[model.key] = await self._new_batcher(model)
        # Everything loaded so far lives as long as the process: keep it out of the cyclic
        # garbage collector's scans, which otherwise show up as latency spikes under load.
        gc.collect()
        gc.freeze()
        self.ready = True
        if self.worker_index is not None:
            self.roster.register(self.worker_index, os.getpid())
        self._watcher = asyncio.get_running_loop().create_task(self._watch())
        log.info("ready: %s", ", ".join(self.batchers))

    async def stop(self) -> None:
        self.ready = False
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        for batcher in self.batchers.values():
            batcher.close()
        self.decoder.shutdown(wait=False, cancel_futures=True)

    def batcher(self, model: LoadedModel) -> ModelBatcher:
        return self.batchers[model.key]

    def not_ready_reason(self) -> dict[str, object] | None:
        """Why /readyz must say 503 now, or None: loading, draining after SIGTERM, or a
        worker of this server that is dead or not yet replaced and warmed."""
        if not self.ready:
            return {"reason": "loading"}
        if self.roster.draining():
            return {"reason": "draining"}
        down = [listener.name for listener in self.listeners if not listener.serving]
        if down:
            return {"reason": "listeners", "not_serving": down}
        missing = self.roster.missing_workers()
        if missing:
            return {"reason": "workers", "missing_workers": missing}
        return None

    async def reload(self) -> ReloadResult:
        """Load, warm and switch to the versions added to the repository since start-up.

        A version that fails (bad sha256, unreadable graph, manifest mismatch) is refused and
        the versions already served stay; requests in flight finish on the model they
        resolved. Removing a served version takes a restart.
        """
        async with self._reload_lock:
            result = ReloadResult()
            try:
                wanted = await asyncio.to_thread(resolve_specs, self.settings)
            except StartupError as exc:
                result.failed["repository"] = str(exc)
                self.metrics.reloads.labels("failed").inc()
                return result
            loaded = {m.key for m in self.models}
            new_models: list[LoadedModel] = []
            for name, version in wanted:
                key = f"{name}:{version}"
                if key in loaded or self._refused.get(key) == self._signature(name, version):
                    continue
                try:
                    model = await asyncio.to_thread(load_model, self.settings, name, version)
                    await asyncio.to_thread(self._warm_session, model)
                    batcher = await self._new_batcher(model)
                except Exception as exc:  # a bad new version must not take the service down
                    self._refused[key] = self._signature(name, version)
                    result.failed[key] = str(exc)
                    log.error("reload: refused %s, still serving the others: %s", key, exc)
                    continue
                self.batchers[key] = batcher  # not reachable until the registry switches
                self._describe(model)
                new_models.append(model)
                result.loaded.append(key)
            if new_models:
                registry = ModelRegistry([*self.models, *new_models], self.models.default_model)
                self.models = registry  # one assignment: a request sees old or new, never half
                log.info("reload: now serving %s", ", ".join(m.key for m in registry))
            self.metrics.reloads.labels("failed" if result.failed else "ok").inc()
            return result

    def note_reload_generation(self, generation: int) -> None:
        """This worker is reloading for `generation` itself: its watcher need not."""
        self._reload_generation = generation

    def _signature(self, name: str, version: int) -> tuple[int, ...]:
        folder = self.settings.model_repo / name / str(version)
        signature: list[int] = []
        for file in ("model.json", "model.onnx"):
            try:
                st = (folder / file).stat()
                signature += [st.st_mtime_ns, st.st_size]
            except OSError:
                signature += [-1, -1]
        return tuple(signature)

    async def _watch(self) -> None:
        """Reload when another worker asks to (admin endpoint) or, with reload_poll_s set,
        every reload_poll_s seconds."""
        poll_s = self.settings.reload_poll_s
        waited = 0.0
        while True:
            await asyncio.sleep(RELOAD_CHECK_S)
            waited += RELOAD_CHECK_S
            generation = self.roster.reload_generation()
            asked = generation != self._reload_generation
            if asked or (poll_s and waited >= poll_s):
                self._reload_generation = generation
                waited = 0.0
                try:
                    await self.reload()
                except Exception:  # keep watching whatever one reload did
                    log.exception("reload failed in worker %d", os.getpid())
