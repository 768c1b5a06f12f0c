"""Faults against a real server: a worker killed outright is replaced and /readyz says so
while it is gone; SIGTERM drains (readiness false, requests still answered), finishes what is
in flight and exits within the grace period, without one failed request."""

from __future__ import annotations

import asyncio
import signal
import socket
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


def connections_per_worker(server: Server, clients: int = 16) -> dict[int, int]:
    """Open `clients` keep-alive connections, each answered once (so a worker has accepted
    it), and count the server-side ends each worker holds."""
    port = int(server.url.rsplit(":", 1)[1])
    sockets = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(clients)]
    try:
        for sock in sockets:
            sock.sendall(b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        for sock in sockets:
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        return {
            worker.pid: sum(
                c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port
                for c in worker.net_connections(kind="tcp")
            )
            for worker in workers(server)
        }
    finally:
        for sock in sockets:
            sock.close()


def listening_sockets(port: int) -> int:
    """TCP sockets in LISTEN state on `port`, one line each in /proc/net/tcp."""
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(
        int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A"
        for fields in (line.split() for line in lines)
    )


def test_each_worker_listens_on_its_own_socket_and_gets_connections(server: Server) -> None:
    # One shared listening socket let one worker take all 8 of 8 connections in 2 runs of 3.
    # Each worker now listens on its own (SO_REUSEPORT) and the kernel picks one by a hash of
    # the client's address: 16 connections all landing on one worker has odds of 1 in 32,768.
    assert listening_sockets(int(server.url.rsplit(":", 1)[1])) == 2
    held = connections_per_worker(server)
    print(f"\nconnections held per worker: {held}")
    assert sum(held.values()) == 16
    assert all(held.values()), held


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
    # The replacement listens on a socket of its own too (its predecessor had already taken
    # the shared one out of use), and gets its share of new connections.
    assert listening_sockets(int(server.url.rsplit(":", 1)[1])) == 2
    held = connections_per_worker(server)
    assert sum(held.values()) == 16 and all(held.values()), held


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
