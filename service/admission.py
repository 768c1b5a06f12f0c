"""Admission control: refuse at once what cannot be answered in time, instead of queueing it.

Under overload the queue that grows is the worker's event loop (HTTP parsing, decoding,
batching all share it), not only the batcher's. Each worker therefore keeps two figures:

- the work in flight: the items (images, texts, tensor rows) of the requests it has admitted
  and not yet answered. A request is admitted once its body has arrived, so a slow upload
  neither holds a place nor spends its budget while it trickles in;
- the time per item in flight: for each answered request, the time from its body's arrival to
  its answer over the items that were in flight when it was admitted (its own included). It is
  what the worker really delivers, batching, event-loop scheduling and whatever else shares its
  cores included, and nothing a client does enters it: the clock starts when the body is here
  and stops when the answer is handed to the kernel.

A request is refused when the items in flight, its own included, times the time per item
exceed the budget's admitted share (GATE_SHARE). Internal work (warm-up, reload) never passes
through the gate.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from service.errors import ServiceUnavailable

log = logging.getLogger("digitserve")

# Weight of one answered request in the moving average of the time per item.
EWMA_WEIGHT = 0.05
# One answer moves the average by at most this factor either way: a single odd request (the
# first one pays for lazy imports: 20 ms where the rest take 1 ms, seen in-process; a garbage
# collection) must not make the gate refuse the next burst, while a real change of load, which
# every answer then shows, is followed within a few dozen answers.
CLIP = 3.0
# The gate refuses on its estimate only once it has this many answers to go on; before, it
# admits (the hard per-request deadline and the bounded queue still hold).
MIN_SAMPLES = 16
# The gate admits a request only if it is expected to be answered within this share of the
# budget: the rest covers the spread of latencies around their mean at a given load.
# See tests/e2e/test_admission_gate.py for the measurement behind it.
GATE_SHARE = 0.7
# Refusals are logged at most this often per worker (with the count since the last line).
REFUSAL_LOG_S = 5.0


class Overloaded(ServiceUnavailable):
    """503 with the reason the request was refused (queue_full or deadline)."""

    def __init__(self, reason: str, message: str, **detail: object) -> None:
        super().__init__(message, detail={"reason": reason, **detail})
        self.reason = reason


def deadline_error(**detail: object) -> Overloaded:
    return Overloaded(
        "deadline",
        "overloaded: the request could not be answered within the latency budget",
        **detail,
    )


@dataclass
class Ticket:
    """One admitted request: its items, known exactly once the request has been parsed."""

    arrived: float  # when its body had arrived (perf_counter): its budget starts there
    expected_s: float  # the estimate it was admitted on (0 while nothing is measured)
    ahead: int  # items in flight when it was admitted
    items: int = 1


class Admission:
    """Per worker: the items in flight and the measured time per item; per model: how many
    requests are admitted at once (the bounded queue)."""

    def __init__(
        self,
        *,
        budget_s: float,
        max_queue: int,
        on_estimate: Callable[[float], None] | None = None,
    ) -> None:
        self.budget_s = budget_s
        self.max_queue = max_queue
        self.in_flight = 0  # items of admitted requests not yet answered
        self.item_s = 0.0  # seconds per item in flight; 0 until measured
        self.samples = 0  # answers measured
        self._on_estimate = on_estimate  # called with actual / expected per answered request
        self._per_model: dict[str, int] = {}
        self._refusals = 0
        self._refusals_logged_at = 0.0

    def expected_s(self, items: int = 1) -> float:
        """How long a request of `items` admitted now is expected to take to be answered."""
        return (self.in_flight + items) * self.item_s

    def check(self, arrived: float) -> float:
        """The request's expected latency if admitted now, or Overloaded (deadline) when the
        work ahead of it would take it past its budget's admitted share."""
        expected = self.expected_s()
        waited = time.perf_counter() - arrived
        if waited > self.budget_s or (
            self.samples >= MIN_SAMPLES and waited + expected > self.budget_s * GATE_SHARE
        ):
            raise self.refused(
                deadline_error(
                    expected_ms=round((waited + expected) * 1000, 1),
                    budget_ms=round(self.budget_s * 1000, 1),
                )
            )
        return expected

    def enter(self, arrived: float) -> Ticket:
        """Admit one request whose body has just arrived (`check` first). Pair with
        `leave()`."""
        ticket = Ticket(arrived=arrived, expected_s=self.check(arrived), ahead=self.in_flight)
        self.in_flight += 1
        return ticket

    def resize(self, ticket: Ticket, items: int) -> None:
        """The request holds `items` items, not one (a batch of images, a V2 tensor)."""
        items = max(1, items)
        self.in_flight += items - ticket.items
        ticket.items = items

    def leave(self, ticket: Ticket) -> None:
        """The request was answered (or failed): learn from how long it took."""
        self.in_flight -= ticket.items
        took = time.perf_counter() - ticket.arrived
        per_item = took / (ticket.ahead + ticket.items)
        if self.samples == 0:
            self.item_s = per_item
        else:
            per_item = min(max(per_item, self.item_s / CLIP), self.item_s * CLIP)
            self.item_s += EWMA_WEIGHT * (per_item - self.item_s)
        self.samples += 1
        if self._on_estimate is not None and ticket.expected_s > 0:
            self._on_estimate(took / ticket.expected_s)

    def refused(self, error: Overloaded) -> Overloaded:
        """Note a refusal (logged once per REFUSAL_LOG_S with the count) and return it."""
        self._refusals += 1
        now = time.monotonic()
        if now - self._refusals_logged_at >= REFUSAL_LOG_S:
            log.warning(
                "overloaded: refused %d request(s) since the last report; the last: %s %s "
                "(in flight %d items at %.3f ms each)",
                self._refusals,
                error.reason,
                error.detail,
                self.in_flight,
                self.item_s * 1000,
            )
            self._refusals, self._refusals_logged_at = 0, now
        return error

    @contextmanager
    def admit(self, model_key: str) -> Iterator[None]:
        """Hold one of the model's `max_queue` places, or refuse with queue_full."""
        queued = self._per_model.get(model_key, 0)
        if queued >= self.max_queue:
            raise self.refused(
                Overloaded(
                    "queue_full",
                    f"overloaded: {self.max_queue} requests for {model_key} are already queued",
                    queued=queued,
                )
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
            raise self.refused(
                deadline_error(
                    waited_ms=round(waited * 1000, 1), budget_ms=round(self.budget_s * 1000, 1)
                )
            )
