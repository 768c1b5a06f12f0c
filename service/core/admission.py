"""Admission control: refuse at once what cannot be answered in time, instead of queueing it.

Under overload the queue that grows is the worker's event loop (HTTP parsing, decoding,
batching all share it), not only the batcher's. Each worker therefore keeps two figures:

- the work in flight: the items (images, texts, tensor rows) of the requests it has admitted
  and not yet answered. A request is admitted once its body has arrived, so a slow upload
  neither holds a place nor spends its budget while it trickles in;
- the time per item: the worker's busy time (time with anything in flight) over the items it
  answered in it, as exponentially decayed sums over the last BUSY_TAU_S or so of busy time.
  By Little's law that is what a new request waits per item ahead of it. Batching, event-loop
  scheduling and whatever else shares the cores are in it; nothing a client does is: idle
  time between requests does not count, and the clock of a request starts when its body is
  here. Per-request figures are no substitute: a request's own time over the items ahead of
  it charges the first request of a batch for the whole batch (it waits for those that join
  after it), and that made the gate refuse closed loops of 32 clients on one core while the
  answers took p50 31 ms of 500.

A request is refused when the items in flight, its own included, times the time per item
exceed the budget's admitted share (GATE_SHARE). When the cores slow down at once (on one
core shared with its clients, say), requests admitted on the old figure can still run late;
so before a request joins a batch it is refused again if its wait so far plus the time
answers have lately taken from that point (per item in flight, times the items in flight now)
would pass the budget. Internal work (warm-up,
reload) never passes through the gate.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from service.core.errors import ServiceUnavailable

log = logging.getLogger("digitserve")

# The time per item follows the last this-many seconds of busy time: several batches even at
# ~100 items a second, so one garbage collection or odd request moves it a little, while a
# real change of load is followed within a few seconds. At 0.25 s the estimate swung enough at
# three times the sustainable rate to admit ~15% fewer requests (tests/e2e/test_overload.py).
BUSY_TAU_S = 1.0
# The gate refuses on its estimate only once it has this many answers to go on; before, it
# admits (the hard per-request deadline and the bounded queue still hold).
MIN_SAMPLES = 16
# The gate admits a request only if it is expected to be answered within this share of the
# budget; the rest covers how much later than expected answers come, as a share of the budget
# (digitserve_admission_overrun_ratio). Measured at three times the sustainable rate by
# tests/e2e/test_overload.py: on two cores 95-100% of answers within 0.1 and all within 0.3;
# pinned to one core 92-97% within 0.1, 99.7% within 0.2 and all within 0.3.
GATE_SHARE = 0.7
# The time from a request joining its batch to its answer, per item in flight when it joined,
# follows the last this-many answers (an exponential mean). Per item in flight, so that the
# figure learnt under a burst shrinks with the load instead of refusing lone requests after it.
TAIL_ANSWERS = 20
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
    items: int = 1
    joined: float | None = None  # when it passed the deadline check to join a batch
    joined_behind: int = 1  # the items in flight then, its own included


class Admission:
    """Per worker: the items in flight and the measured time per item; per model: how many
    requests are admitted at once (the bounded queue)."""

    def __init__(
        self,
        *,
        budget_s: float,
        max_queue: int,
        on_overrun: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.budget_s = budget_s
        self.clock = clock  # the clock `arrived` times are read from
        self.max_queue = max_queue
        self.in_flight = 0  # items of admitted requests not yet answered
        self.item_s = 0.0  # busy seconds per item answered; 0 until measured
        self.samples = 0  # answers measured
        self.tail_item_s = 0.0  # time from joining a batch to the answer, per item in flight
        self._tails = 0  # answers in that mean, up to TAIL_ANSWERS
        self._busy_s = 0.0  # decayed sum of busy time ...
        self._items = 0.0  # ... and of the items answered in it
        self._mark = 0.0  # busy time is counted up to here (the last answer, or busy start)
        # Called per answer the gate had an estimate for, with the share of the budget by which
        # the answer came later than expected (0 when on time): what GATE_SHARE's margin covers.
        self._on_overrun = on_overrun
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
        waited = self.clock() - arrived
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
        ticket = Ticket(arrived=arrived, expected_s=self.check(arrived))
        if self.in_flight == 0:  # a busy period starts
            self._mark = max(self._mark, arrived)
        self.in_flight += 1
        return ticket

    def resize(self, ticket: Ticket, items: int) -> None:
        """The request holds `items` items, not one (a batch of images, a V2 tensor)."""
        items = max(1, items)
        self.in_flight += items - ticket.items
        ticket.items = items

    def leave(self, ticket: Ticket) -> None:
        """The request was answered (or failed): learn from how long it took."""
        now = self.clock()
        self.in_flight -= ticket.items
        busy, self._mark = max(0.0, now - self._mark), now
        decay = math.exp(-busy / BUSY_TAU_S)
        self._busy_s = self._busy_s * decay + busy
        self._items = self._items * decay + ticket.items
        self.item_s = self._busy_s / self._items
        took = now - ticket.arrived
        if ticket.joined is not None:
            self._tails = min(self._tails + 1, TAIL_ANSWERS)
            sample = (now - ticket.joined) / ticket.joined_behind
            self.tail_item_s += (sample - self.tail_item_s) / self._tails
        self.samples += 1
        if self._on_overrun is not None and ticket.expected_s > 0:
            self._on_overrun(max(0.0, took - ticket.expected_s) / self.budget_s)

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

    def check_deadline(self, arrived: float, ticket: Ticket | None = None) -> None:
        """Refuse a request, before it joins a batch, that has used its budget or would pass it
        in the time answers take from here (the admission estimate can be outrun when the
        cores slow down at once, and an answer past the budget helps no one)."""
        now = self.clock()
        waited = now - arrived
        tail = self.tail_item_s * max(1, self.in_flight)
        # Only a request that has already waited past the admitted share: the per-item tail
        # times a burst's items overstates what a batch costs, and must not refuse a burst.
        late = waited > self.budget_s * GATE_SHARE and waited + tail > self.budget_s
        if waited > self.budget_s or (self.samples >= MIN_SAMPLES and late):
            raise self.refused(
                deadline_error(
                    waited_ms=round(waited * 1000, 1),
                    expected_ms=round((waited + tail) * 1000, 1),
                    budget_ms=round(self.budget_s * 1000, 1),
                )
            )
        if ticket is not None:
            ticket.joined, ticket.joined_behind = now, max(1, self.in_flight)
