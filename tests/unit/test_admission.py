"""The admission rules on their own: the per-model bounded queue, the time per item learnt
from the worker's busy time, and the gate that refuses only what the work ahead would make
late. The gate reads a clock the tests drive, so each figure here is exact."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import pytest

from service.core.admission import BUSY_TAU_S, GATE_SHARE, MIN_SAMPLES, Admission, Overloaded


class Clock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def gate(
    budget_s: float = 10.0, on_overrun: Callable[[float], None] | None = None
) -> tuple[Admission, Clock]:
    clock = Clock()
    admission = Admission(budget_s=budget_s, max_queue=1000, on_overrun=on_overrun, clock=clock)
    return admission, clock


def answer(admission: Admission, clock: Clock, *, took_s: float, items: int = 1) -> None:
    """One request admitted alone and answered `took_s` later, then a moment of idle time."""
    ticket = admission.enter(clock())
    admission.resize(ticket, items)
    clock.advance(took_s)
    admission.leave(ticket)
    clock.advance(0.5)  # idle: it counts for nothing


def learnt(item_s: float, budget_s: float = 10.0) -> tuple[Admission, Clock]:
    """A gate that has seen enough answers of `item_s` each to act on."""
    admission, clock = gate(budget_s)
    for _ in range(MIN_SAMPLES):
        answer(admission, clock, took_s=item_s)
    return admission, clock


def test_queue_full_per_model_and_freed_on_exit() -> None:
    admission = Admission(budget_s=1.0, max_queue=2)
    with admission.admit("a:1"), admission.admit("a:1"):
        with pytest.raises(Overloaded) as refused, admission.admit("a:1"):
            pass
        assert refused.value.reason == "queue_full"
        assert refused.value.status == 503 and refused.value.headers()["Retry-After"] == "1"
        with admission.admit("b:1"):  # another model has its own queue
            pass
    with admission.admit("a:1"):
        pass


def test_the_time_per_item_is_busy_time_over_items_and_idle_time_does_not_count() -> None:
    admission, _ = learnt(0.002)
    assert admission.item_s == pytest.approx(0.002)
    assert admission.samples == MIN_SAMPLES


def test_the_first_request_of_a_batch_is_not_charged_for_the_batch_alone() -> None:
    # It came with nothing ahead, nine joined its batch, and all ten were answered 10 ms after
    # it came, one after the other: the worker delivered 1 ms per item, not 10.
    admission, clock = gate()
    first = admission.enter(clock())
    joined = [admission.enter(clock()) for _ in range(9)]
    clock.advance(0.010)
    for ticket in [first, *joined]:
        admission.leave(ticket)
    assert admission.item_s == pytest.approx(0.001)
    assert admission.in_flight == 0


def test_closed_loop_estimate_is_littles_law() -> None:
    # 32 clients, a batch of 32 answered every 16 ms: a new request behind 31 others is
    # expected to wait one cycle, which is what it then takes.
    admission, clock = gate()
    tickets = [admission.enter(clock()) for _ in range(32)]
    for _ in range(10):
        clock.advance(0.016)
        for ticket in tickets:
            admission.leave(ticket)
        tickets = [admission.enter(clock()) for _ in range(31)]
        assert admission.expected_s() == pytest.approx(0.016)
        tickets.append(admission.enter(clock()))


def test_nothing_is_refused_on_an_estimate_made_from_too_few_answers() -> None:
    admission, clock = gate(budget_s=0.5)
    answer(admission, clock, took_s=0.4)  # one slow first answer
    tickets = [admission.enter(clock()) for _ in range(50)]
    assert len(tickets) == 50


def test_refuses_exactly_when_the_work_ahead_would_pass_the_share() -> None:
    admission, clock = learnt(0.009, budget_s=0.1)  # 9 ms per item, measured
    tickets = []
    with pytest.raises(Overloaded) as refused:
        for _ in range(100):
            tickets.append(admission.enter(clock()))
    assert refused.value.reason == "deadline"
    assert refused.value.detail["budget_ms"] == 100.0
    # Admitted while (in flight + itself) x 9 ms fits in the share of the 100 ms budget.
    assert len(tickets) == int(0.1 * GATE_SHARE / 0.009)
    for ticket in tickets:
        admission.leave(ticket)
    admission.leave(admission.enter(clock()))  # drained: admitted again


def test_one_odd_pause_moves_the_estimate_only_for_a_while() -> None:
    admission, clock = learnt(0.001)
    for _ in range(1000):  # a second of busy time at 1 ms per item
        answer(admission, clock, took_s=0.001)
    answer(admission, clock, took_s=0.05)  # a garbage collection, a page-fault storm
    assert 0.001 < admission.item_s < 0.001 * 1.1
    for _ in range(int(3 * BUSY_TAU_S / 0.001)):
        answer(admission, clock, took_s=0.001)
    assert admission.item_s == pytest.approx(0.001, rel=0.01)


def test_a_real_change_of_load_is_followed_within_a_few_time_constants() -> None:
    admission, clock = learnt(0.001)
    for _ in range(int(3 * BUSY_TAU_S / 0.008)):
        answer(admission, clock, took_s=0.008)  # the machine got eight times slower
    assert admission.item_s == pytest.approx(0.008, rel=1.5 * math.exp(-3))
    for _ in range(int(3 * BUSY_TAU_S / 0.001)):
        answer(admission, clock, took_s=0.001)  # and fast again
    assert admission.item_s == pytest.approx(0.001, rel=0.2)


def test_big_batches_do_not_leave_the_gate_refusing_single_images() -> None:
    # Two 64-image requests, then bursts of 20 single images: the time is per item, and every
    # answer updates it, so nothing is stuck at the batches' figure.
    admission, clock = learnt(0.0005, budget_s=0.5)
    for _ in range(2):
        answer(admission, clock, took_s=64 * 0.0005, items=64)
    assert admission.item_s == pytest.approx(0.0005)
    tickets = [admission.enter(clock()) for _ in range(20)]
    assert admission.expected_s() < 0.5 * GATE_SHARE
    for ticket in tickets:
        admission.leave(ticket)


def test_resize_counts_the_items_of_a_request_in_flight() -> None:
    admission, clock = gate()
    ticket = admission.enter(clock())
    admission.resize(ticket, 32)
    assert admission.in_flight == 32
    admission.leave(ticket)
    assert admission.in_flight == 0


def test_a_request_that_already_waited_its_budget_is_refused() -> None:
    admission, clock = gate(budget_s=0.05)
    with pytest.raises(Overloaded):
        admission.enter(clock() - 0.06)
    with pytest.raises(Overloaded):
        admission.check_deadline(clock() - 0.06)
    admission.check_deadline(clock())


def test_a_request_the_rest_of_the_way_would_make_late_is_refused_before_its_batch() -> None:
    admission, clock = learnt(0.01, budget_s=1.0)
    for _ in range(MIN_SAMPLES):  # alone, answers take 0.2 s from joining their batch
        ticket = admission.enter(clock())
        admission.check_deadline(ticket.arrived, ticket)
        clock.advance(0.2)
        admission.leave(ticket)
    assert admission.tail_item_s == pytest.approx(0.2, rel=0.05)
    admission.check_deadline(clock() - 0.75)  # 0.75 + 0.2 is within the budget
    with pytest.raises(Overloaded) as refused:
        admission.check_deadline(clock() - 0.85)
    assert refused.value.detail["expected_ms"] == pytest.approx(1050, rel=0.01)


def test_the_rest_of_the_way_learnt_under_a_burst_shrinks_with_the_load() -> None:
    admission, clock = learnt(0.001, budget_s=1.0)
    burst = [admission.enter(clock()) for _ in range(100)]
    for ticket in burst:  # 100 in flight: each answered 0.5 s after joining
        admission.check_deadline(ticket.arrived, ticket)
    clock.advance(0.5)
    for ticket in burst:
        admission.leave(ticket)
    lone = admission.enter(clock())
    admission.check_deadline(lone.arrived, lone)  # alone it has 5 ms to go, not 0.5 s
    assert admission.tail_item_s * admission.in_flight == pytest.approx(0.005, rel=0.05)


def test_the_overrun_of_every_answer_is_reported_as_a_share_of_the_budget() -> None:
    overruns: list[float] = []
    admission, clock = gate(budget_s=0.5, on_overrun=overruns.append)
    answer(admission, clock, took_s=0.01)  # nothing measured before it: no estimate to report
    assert overruns == []
    answer(admission, clock, took_s=0.06)  # expected 10 ms, took 60: 50 ms late, 10% of 500
    answer(admission, clock, took_s=0.001)  # early: no overrun
    assert overruns == [pytest.approx(0.1), 0.0]


def test_refusals_are_logged_once_per_period_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    admission, clock = learnt(1.0, budget_s=100.0)
    admission.budget_s = 0.01
    with caplog.at_level(logging.WARNING, logger="digitserve"):
        for _ in range(5):
            with pytest.raises(Overloaded):
                admission.enter(clock())
    lines = [r.getMessage() for r in caplog.records if "overloaded" in r.getMessage()]
    assert len(lines) == 1 and "refused 1 request" in lines[0] and "deadline" in lines[0]
