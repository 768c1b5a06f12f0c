"""The admission rules on their own: the per-model bounded queue, the time per item in flight
learnt from answered requests, and the gate that refuses only what the work ahead would make
late. Durations are given by stamping a request's arrival in the past: the gate measures from
arrival to answer, so each figure here is exact."""

from __future__ import annotations

import logging
import time

import pytest

from service.admission import CLIP, EWMA_WEIGHT, GATE_SHARE, MIN_SAMPLES, Admission, Overloaded


def answer(admission: Admission, *, took_s: float, items: int = 1) -> None:
    """One request admitted and answered `took_s` after its body arrived."""
    ticket = admission.enter(time.perf_counter() - took_s)
    admission.resize(ticket, items)
    admission.leave(ticket)


def learnt(item_s: float, budget_s: float = 10.0) -> Admission:
    """A gate that has seen enough answers of `item_s` each to act on."""
    admission = Admission(budget_s=budget_s, max_queue=1000)
    for _ in range(MIN_SAMPLES):
        answer(admission, took_s=item_s)
    return admission


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


def test_the_time_per_item_is_learnt_from_answers() -> None:
    admission = learnt(0.002)
    assert admission.item_s == pytest.approx(0.002, rel=0.01)
    assert admission.samples == MIN_SAMPLES


def test_an_answer_counts_the_items_that_were_in_flight_at_its_admission() -> None:
    admission = Admission(budget_s=10.0, max_queue=1000)
    ahead = [admission.enter(time.perf_counter()) for _ in range(9)]
    last = admission.enter(time.perf_counter() - 0.010)  # 9 ahead of it, answered in 10 ms
    admission.leave(last)
    assert admission.item_s == pytest.approx(0.001, rel=0.01)
    for ticket in ahead:
        admission.leave(ticket)
    assert admission.in_flight == 0


def test_nothing_is_refused_on_an_estimate_made_from_too_few_answers() -> None:
    admission = Admission(budget_s=0.5, max_queue=1000)
    answer(admission, took_s=0.4)  # one slow first answer (lazy imports, say)
    tickets = [admission.enter(time.perf_counter()) for _ in range(50)]
    assert len(tickets) == 50


def test_refuses_exactly_when_the_work_ahead_would_pass_the_share() -> None:
    admission = learnt(0.009, budget_s=0.1)  # 9 ms per item, measured
    now = time.perf_counter()
    tickets = []
    with pytest.raises(Overloaded) as refused:
        for _ in range(100):
            tickets.append(admission.enter(now))
    assert refused.value.reason == "deadline"
    assert refused.value.detail["budget_ms"] == 100.0
    # Admitted while (in flight + itself) x 9 ms fits in the share of the 100 ms budget.
    assert len(tickets) == int(0.1 * GATE_SHARE / 0.009)
    for ticket in tickets:
        admission.leave(ticket)
    admission.leave(admission.enter(time.perf_counter()))  # drained: admitted again


def test_one_odd_answer_moves_the_estimate_only_a_little() -> None:
    admission = learnt(0.001)
    before = admission.item_s
    answer(admission, took_s=0.5)  # a garbage collection, a page fault storm
    assert admission.item_s == pytest.approx(before * (1 + EWMA_WEIGHT * (CLIP - 1)))


def test_a_real_change_of_load_is_followed_within_a_few_dozen_answers() -> None:
    admission = learnt(0.001)
    for _ in range(60):
        answer(admission, took_s=0.008)  # the machine got eight times slower
    assert admission.item_s == pytest.approx(0.008, rel=0.1)
    for _ in range(150):
        answer(admission, took_s=0.001)  # and fast again
    assert admission.item_s == pytest.approx(0.001, rel=0.1)


def test_big_batches_do_not_leave_the_gate_refusing_single_images() -> None:
    # Two 64-image requests, then bursts of 20 single images: the time is per item, and every
    # answer updates it, so nothing is stuck at the batches' figure.
    admission = learnt(0.0005, budget_s=0.5)
    for _ in range(2):
        answer(admission, took_s=64 * 0.0005, items=64)
    assert admission.item_s == pytest.approx(0.0005, rel=0.01)
    tickets = [admission.enter(time.perf_counter()) for _ in range(20)]
    assert admission.expected_s() < 0.5 * GATE_SHARE
    for ticket in tickets:
        admission.leave(ticket)


def test_resize_counts_the_items_of_a_request_in_flight() -> None:
    admission = Admission(budget_s=1.0, max_queue=10)
    ticket = admission.enter(time.perf_counter())
    admission.resize(ticket, 32)
    assert admission.in_flight == 32
    admission.leave(ticket)
    assert admission.in_flight == 0


def test_a_request_that_already_waited_its_budget_is_refused() -> None:
    admission = Admission(budget_s=0.05, max_queue=100)
    with pytest.raises(Overloaded):
        admission.enter(time.perf_counter() - 0.06)
    with pytest.raises(Overloaded):
        admission.check_deadline(time.perf_counter() - 0.06)
    admission.check_deadline(time.perf_counter())


def test_the_estimate_of_every_answer_is_reported() -> None:
    ratios: list[float] = []
    admission = Admission(budget_s=1.0, max_queue=10, on_estimate=ratios.append)
    answer(admission, took_s=0.01)  # nothing measured before it: no estimate to report
    assert ratios == []
    answer(admission, took_s=0.02)  # expected 10 ms, took 20
    assert ratios == [pytest.approx(2.0, rel=0.01)]


def test_refusals_are_logged_once_per_period_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    admission = learnt(1.0, budget_s=100.0)
    admission.budget_s = 0.01
    with caplog.at_level(logging.WARNING, logger="digitserve"):
        for _ in range(5):
            with pytest.raises(Overloaded):
                admission.enter(time.perf_counter())
    lines = [r.getMessage() for r in caplog.records if "overloaded" in r.getMessage()]
    assert len(lines) == 1 and "refused 1 request" in lines[0] and "deadline" in lines[0]
