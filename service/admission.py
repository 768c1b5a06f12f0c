"""Admission control: refuse at once what cannot be answered in time, instead of queueing it.

Under overload the queue that grows is the worker's event loop (HTTP parsing, decoding,
batching all share it), not only the batcher's. So each worker estimates how long a newly
admitted request would wait, from how fast requests complete while the worker is busy, and
refuses with 503 + Retry-After a request that would miss its deadline; each model also has a
hard cap on the requests admitted at once (the bounded queue). Below the sustainable load the
estimate stays far under the budget and nothing is refused.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from service.errors import ServiceUnavailable

# Weight of the newest busy-period departure interval in the moving average.
EWMA_WEIGHT = 0.05
# A completion interval counts as at most this many times the CPU the worker used in it: a slow
# client spaces completions out without costing the worker anything (measured: 64 requests
# from one Python client were refused at an "expected" 254 ms), while a worker that shares its
# core with other processes takes up to a few times its CPU time in wall time.
CPU_SLACK = 3.0
# The gate admits a request only if it is expected to finish within this share of the budget:
# the estimate misses the time before a request is parsed and after it is answered.
GATE_SHARE = 0.5


class Overloaded(ServiceUnavailable):
    """503 with the reason the request was refused (queue_full or deadline)."""

    def __init__(self, reason: str, message: str, **detail: object) -> None:
        super().__init__(message, detail={"reason": reason, **detail})
        self.reason = reason


class Admission:
    """Per worker: the requests in flight, and the estimated cost of one request, measured as
    the interval between completions while others were still in flight (capped by the CPU the
    worker spent in it); per model: how many requests are admitted at once."""

    def __init__(self, *, budget_s: float, max_queue: int) -> None:
        self.budget_s = budget_s
        self.max_queue = max_queue
        self.in_flight = 0
        self._per_model: dict[str, int] = {}
        self._last_done = 0.0
        self._last_cpu = 0.0
        self._busy_since_last_done = False
        self.service_s = 0.0  # estimated seconds per request when busy; 0 until measured

    def expected_wait_s(self) -> float:
        return self.in_flight * self.service_s

    def enter(self, arrived: float) -> None:
        """Let one prediction request in (before its body is read), or refuse it at once when
        the requests ahead of it would take it past its deadline. Pair with `leave()`."""
        expected = time.perf_counter() - arrived + self.expected_wait_s()
        if expected > self.budget_s * GATE_SHARE:
            raise Overloaded(
                "deadline",
                "overloaded: the request could not be answered within the latency budget",
                expected_ms=round(expected * 1000, 1),
                budget_ms=round(self.budget_s * 1000, 1),
            )
        self.in_flight += 1

    def leave(self) -> None:
        self.in_flight -= 1
        done, cpu = time.perf_counter(), time.process_time()
        # The interval between two completions with requests in flight all along is what one
        # request costs this worker when busy, HTTP handling and batching included, unless
        # the worker was waiting on its clients meanwhile: hence the CPU cap.
        if self._busy_since_last_done:
            interval = min(done - self._last_done, CPU_SLACK * (cpu - self._last_cpu))
            self.service_s += EWMA_WEIGHT * (interval - self.service_s)
        self._last_done, self._last_cpu = done, cpu
        self._busy_since_last_done = self.in_flight > 0

    @contextmanager
    def admit(self, model_key: str) -> Iterator[None]:
        """Hold one of the model's `max_queue` places, or refuse with queue_full."""
        queued = self._per_model.get(model_key, 0)
        if queued >= self.max_queue:
            raise Overloaded(
                "queue_full",
                f"overloaded: {self.max_queue} requests for {model_key} are already queued",
                queued=queued,
            )
        self._per_model[model_key] = queued + 1
        try:
            yield
        finally:
            self._per_model[model_key] -= 1

    def check_deadline(self, arrived: float) -> None:
        """Refuse a request that has already used its budget before it joins a batch."""
        waited = time.perf_counter() - arrived
        if waited > self.budget_s:
            raise Overloaded(
                "deadline",
                "overloaded: the request could not be answered within the latency budget",
                waited_ms=round(waited * 1000, 1),
                budget_ms=round(self.budget_s * 1000, 1),
            )
