"""The admission rules on their own: the per-model bounded queue and the deadline estimate."""

from __future__ import annotations

import time

import pytest

from service.admission import GATE_SHARE, Admission, Overloaded


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


def test_gate_refuses_when_the_requests_ahead_would_miss_the_budget() -> None:
    admission = Admission(budget_s=0.1, max_queue=100)
    admission.service_s = 0.01  # 10 ms per request when busy
    now = time.perf_counter()
    with pytest.raises(Overloaded) as refused:
        for _ in range(100):
            admission.enter(now)
    assert refused.value.reason == "deadline"
    # Admitted while (in flight) x 10 ms fits in the gate's share of the 100 ms budget.
    assert admission.in_flight == pytest.approx(0.1 * GATE_SHARE / 0.01, abs=1)
    for _ in range(admission.in_flight):
        admission.leave()
    admission.enter(time.perf_counter())  # the queue has drained: admitted again


def test_gate_refuses_a_request_that_already_waited_its_budget() -> None:
    admission = Admission(budget_s=0.05, max_queue=100)
    with pytest.raises(Overloaded):
        admission.enter(time.perf_counter() - 0.06)
    with pytest.raises(Overloaded):
        admission.check_deadline(time.perf_counter() - 0.06)
    admission.check_deadline(time.perf_counter())


def test_service_time_is_learnt_from_busy_completions_only() -> None:
    admission = Admission(budget_s=1.0, max_queue=100)
    admission.enter(time.perf_counter())
    admission.leave()  # alone: nothing learnt
    time.sleep(0.05)
    admission.enter(time.perf_counter())
    admission.leave()  # the idle gap before it is not a service time
    assert admission.service_s == 0.0
    for _ in range(3):
        admission.enter(time.perf_counter())
    for _ in range(3):
        spin(0.002)  # the worker computing
        admission.leave()
    assert 0 < admission.service_s < 0.01


def test_completions_spaced_by_slow_clients_are_not_service_time() -> None:
    admission = Admission(budget_s=1.0, max_queue=100)
    for _ in range(41):
        admission.enter(time.perf_counter())
    for _ in range(40):
        time.sleep(0.005)  # idle, waiting for a client's bytes
        admission.leave()
    # Only the little CPU the worker spent counts, not the 5 ms between completions.
    assert admission.service_s < 0.001


def spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
