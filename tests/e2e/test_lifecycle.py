"""Faults against a real server: a worker killed outright is replaced and /readyz says so
while it is gone; SIGTERM drains (readiness false, requests still answered), finishes what is
in flight and exits within the grace period, without one failed request."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.helpers import ROOT, Server, running_server
from tests.loadgen import closed_loop

DRAIN_S = 2.0
PNG = (ROOT / "examples" / "digits" / "7.png").read_bytes()


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[Server]:
    env = {"DIGITSERVE_DRAIN_S": str(DRAIN_S), "DIGITSERVE_MODELS": "digits-cnn"}
    with running_server(tmp_path / "server.log", "--workers", "2", env=env) as srv:
        yield srv


def workers(server: Server) -> list[psutil.Process]:
    """BentoML's worker processes: the children of its arbiter (the supervisor's child)."""
    (arbiter,) = psutil.Process(server.process.pid).children()
    return arbiter.children()


def readyz(server: Server) -> tuple[int, dict[str, object]]:
    r = httpx.get(f"{server.url}/readyz", timeout=5)
    return r.status_code, r.json()


def test_a_killed_worker_is_replaced_and_readiness_shows_the_gap(server: Server) -> None:
    victim = workers(server)[0]
    victim.kill()
    seen_gap = False
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        status, body = readyz(server)  # answered by the surviving worker meanwhile
        if status == 503:
            assert body["detail"]["reason"] == "workers", body  # type: ignore[index]
            seen_gap = True
        elif seen_gap:
            break
        time.sleep(0.2)
    assert seen_gap, "/readyz never reported the dead worker"
    assert readyz(server)[0] == 200, "the worker was not replaced"
    pids = {p.pid for p in workers(server)}
    assert len(pids) == 2 and victim.pid not in pids
    r = httpx.post(f"{server.url}/predict", files={"image": ("7.png", PNG)}, timeout=10)
    assert r.status_code == 200 and r.json()["predictions"][0]["label"] == "7"


def test_sigterm_drains_without_failing_a_request(server: Server) -> None:
    url = f"{server.url}/predict"
    marks: dict[str, float] = {}
    ready_during_drain: list[int] = []

    async def terminate() -> None:
        await asyncio.sleep(1.5)
        marks["term"] = time.monotonic()
        server.process.send_signal(signal.SIGTERM)  # the supervisor only: as a container would
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() < marks["term"] + DRAIN_S - 0.5:
                ready_during_drain.append((await client.get(f"{server.url}/readyz")).status_code)
                await asyncio.sleep(0.1)

    outcomes = asyncio.run(closed_loop(url, PNG, users=16, duration_s=6, during=terminate))
    server.process.wait(timeout=DRAIN_S + 30)
    exited_after = time.monotonic() - marks["term"]
    term = marks["term"]

    in_flight = [o for o in outcomes if o.started < term < o.ended]
    during_drain = [o for o in outcomes if term <= o.started < term + DRAIN_S - 0.2]
    before = [o for o in outcomes if o.started < term]
    print(
        f"\n{len(before)} requests before SIGTERM ({len(in_flight)} in flight), "
        f"{len(during_drain)} during the drain; exited {exited_after:.1f} s after SIGTERM"
    )
    assert Counter(o.status for o in before) == {200: len(before)}
    assert in_flight, "no request was in flight at SIGTERM: the test proves nothing"
    assert Counter(o.status for o in during_drain) == {200: len(during_drain)}
    assert ready_during_drain and set(ready_during_drain) == {503}
    assert exited_after < DRAIN_S + 25
    assert server.process.returncode == 0
