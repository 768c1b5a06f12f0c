"""`python -m bench`: this service against the servers a user could pick instead, on this machine.

Every server is started cold, one at a time, in its own process group on a free loopback port;
timed to its first ready answer; warmed with a few requests (and checked to answer a 7 with
a 7); loaded by Locust through `loadtest.runner.run_locust`; measured (RSS of its whole
process tree); stopped; and waited on until it is gone, before the next one starts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import psutil  # type: ignore[import-untyped, unused-ignore]  # no stubs installed

from bench.servers import common
from loadtest.images import load_images
from loadtest.runner import Summary, run_locust
from modelrepo.preprocess import pixels_to_input

ROOT = common.ROOT
EXAMPLE_7 = ROOT / "examples" / "mnist" / "7.png"
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
READY_TIMEOUT_S = 120.0
STOP_GRACE_S = 20.0
WARMUP_REQUESTS = 40
SLO_P99_MS = 50.0
BATCH_SIZE = 32
BATCH_USERS = 8
# Open-loop arrival generators: each fires rate/users requests/s with up to 256 in flight.
OPEN_LOOP_USERS = 16

# The targets: this service's success rps / a peer's, at least this much.
RATIO_TARGETS = {"5": 0.6, "3": 1.5, "2b": 1.2, "4": 2.0}
P99_OVER_P50_TARGET = 3.0
BATCH_FRACTION_TARGET = 0.5
COLD_START_TARGET_S = 5.0
# Other people's processes using more than this many cores during a run make it suspect.
NOISY_CORES = 0.25


@dataclass(frozen=True)
class Peer:
    """One server configuration: how to start it and where it says it is ready."""

    key: str
    name: str
    module: str
    args: tuple[str, ...]
    health: str

    def command(self, port: int) -> list[str]:
        if self.module == "service":
            return [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port),
                    "--model-repo", "exports", *self.args]  # fmt: skip
        return [sys.executable, "-m", self.module, "--port", str(port), *self.args]


SERVICE = Peer("1", "this service (python -m service, defaults)", "service", (), "/readyz")
PEERS = [
    SERVICE,
    Peer("2a", "naive FastAPI + torch, 1 worker", "bench.servers.naive_fastapi", (), "/health"),
    Peer(
        "2b",
        "naive tuned: 2 workers, 1 torch thread each",
        "bench.servers.naive_fastapi",
        ("--workers", "2", "--torch-threads", "1"),
        "/health",
    ),
    Peer("3", "LitServe ONNX, batching 32 / 5 ms", "bench.servers.litserve_onnx", (), "/health"),
    Peer("4", "bare BentoML, adaptive batching", "bench.servers.bare_bentoml", (), "/readyz"),
    Peer("5", "bare Starlette reference (uvloop)", "bench.servers.bare_starlette", (), "/health"),
]


@dataclass
class Settings:
    users: int
    duration_s: float
    search_runs: int
    search_duration_s: float
    inprocess_s: float
    out: Path
    write_md: Path | None
    only: list[str] | None
    command: str


@dataclass
class RunResult:
    """One Locust run, reduced to what the table needs (the full Summary is in summary.json)."""

    success_rps: float
    rps: float
    p50_ms: float
    p99_ms: float
    failures: int
    requests: int
    failures_by_status: dict[str, int]
    images_per_s: float | None = None
    rate: float | None = None
    others_cpu: float | None = None  # cores used meanwhile by processes outside this bench
    server_cpu: list[float] = field(default_factory=list)  # cores per server process

    @classmethod
    def of(cls, summary: Summary, use: CpuUse | None = None) -> RunResult:
        return cls(
            success_rps=summary.success_rps,
            rps=summary.rps,
            p50_ms=summary.p50_ms,
            p99_ms=summary.p99_ms,
            failures=summary.failures,
            requests=summary.requests,
            failures_by_status=summary.failures_by_status,
            images_per_s=summary.images_per_s,
            rate=summary.rate,
            others_cpu=None if use is None else use.others,
            server_cpu=[] if use is None else [c for c in use.server if c >= 0.05],
        )


@dataclass
class PeerResult:
    key: str
    name: str
    ready_s: float | None = None
    rss_mib: float | None = None
    single: RunResult | None = None
    repeated: bool = False  # the first closed-loop run met someone else's load: run again
    error: str | None = None


@dataclass
class ServiceExtras:
    """The measurements taken on this service only."""

    batch: RunResult | None = None
    search: list[RunResult] = field(default_factory=list)
    max_rate: float | None = None
    at70: RunResult | None = None
    errors: list[str] = field(default_factory=list)


@dataclass
class InProcess:
    batch1_images_per_s: float
    batch32_images_per_s: float


# ---------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def process_tree(pid: int | None) -> list[psutil.Process]:
    """The server and every process under it. BentoML's arbiter puts its workers in sessions
    of their own, so the process group alone would miss them."""
    if pid is None:
        return []
    try:
        leader = psutil.Process(pid)
        return [leader, *leader.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_rss_mib(pid: int) -> float:
    total = 0
    for proc in process_tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += proc.memory_info().rss
    return total / 2**20


def tree_cpu_s(procs: list[psutil.Process]) -> dict[int, float]:
    """CPU seconds (user + system) so far of each process still alive."""
    seconds = {}
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            times = proc.cpu_times()
            seconds[proc.pid] = times.user + times.system
    return seconds


def _busy_s() -> float:
    """Seconds of CPU the whole machine has spent busy (all cores, steal excluded)."""
    t = psutil.cpu_times()
    # guest time is already inside user time, iowait is idle: neither is added.
    return float(t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0))


@dataclass
class CpuUse:
    """Cores used during a span: by each of the server's processes (busiest first) and by
    processes outside this bench (other people's load on a shared machine)."""

    server: list[float] = field(default_factory=list)
    others: float = 0.0


@contextlib.contextmanager
def cpu_use(server_pid: int | None) -> Iterator[CpuUse]:
    """Fill a CpuUse over the `with` block. "Others" is the machine's busy time less the
    server's tree, this process and its finished children (Locust, waited on by run_locust)."""
    use = CpuUse()
    tree = process_tree(server_pid)
    me = psutil.Process()
    server0, busy0, me0, kids0 = tree_cpu_s(tree), _busy_s(), me.cpu_times(), os.times()
    started = time.monotonic()
    yield use
    wall = time.monotonic() - started
    server1, me1, kids1 = tree_cpu_s(tree), me.cpu_times(), os.times()
    per_process = [server1[p] - server0[p] for p in server1 if p in server0]
    mine = (me1.user + me1.system) - (me0.user + me0.system)
    kids = (kids1.children_user + kids1.children_system) - (
        kids0.children_user + kids0.children_system
    )
    use.server = sorted((c / wall for c in per_process), reverse=True)
    use.others = max(0.0, (_busy_s() - busy0 - sum(per_process) - mine - kids) / wall)


def settle(pid: int | None, limit_s: float = 30.0) -> float:
    """Wait, up to limit_s, until the server has worked off what an earlier run left queued
    (its tree under a tenth of a core) and other people's processes on this shared machine are
    quiet, each over half a second. Returns the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        with cpu_use(pid) as use:
            time.sleep(0.5)
        if sum(use.server) < 0.1 and use.others < NOISY_CORES:
            break
    return time.monotonic() - started


@dataclass
class Running:
    peer: Peer
    port: int
    process: subprocess.Popen[bytes]
    ready_s: float

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start(peer: Peer, log_path: Path) -> Running:
    """Start peer cold on a free port; return once its health path answers 200."""
    settle(None)  # a start-up timed while someone else's load runs would be slow for no reason
    port = free_port()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BENTOML_DO_NOT_TRACK": "true"}
    with log_path.open("wb") as log:
        started = time.monotonic()
        process = subprocess.Popen(
            peer.command(port),
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group: stopped by group, never by name
        )
    running = Running(peer, port, process, math.nan)
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"exited with {process.returncode}; see {log_path}")
            try:
                url = f"http://127.0.0.1:{port}{peer.health}"
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() - started > READY_TIMEOUT_S:
                raise RuntimeError(f"not ready after {READY_TIMEOUT_S:.0f} s; see {log_path}")
            time.sleep(0.05)
    except BaseException:
        stop(running)
        raise
    running.ready_s = time.monotonic() - started
    return running


def stop(running: Running) -> None:
    """SIGTERM the server's process group, wait, then SIGKILL whatever this server started
    that is still alive (by PID); wait until its port is free."""
    process = running.process
    tree = process_tree(process.pid)
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    _gone, alive = psutil.wait_procs(tree, timeout=5)
    for proc in alive:  # e.g. a BentoML worker in a session of its own
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)
    deadline = time.monotonic() + 30
    while port_open(running.port) and time.monotonic() < deadline:
        time.sleep(0.1)


@contextlib.contextmanager
def serving(peer: Peer, log_path: Path) -> Iterator[Running]:
    running = start(peer, log_path)
    try:
        yield running
    finally:
        stop(running)


# ---------------------------------------------------------------- requests


def multipart(name: str, filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = "bench-2f8c1d0e6b"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"'
        f"\r\nContent-Type: image/png\r\n\r\n".encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def predict_label(url: str, filename: str, data: bytes) -> str:
    """POST one image to /predict; the top label of the answer (a list of one, for BentoML)."""
    body, content_type = multipart("image", filename, data)
    request = urllib.request.Request(
        f"{url}/predict", data=body, headers={"Content-Type": content_type}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer: Any = json.loads(response.read())
    if isinstance(answer, list):
        answer = answer[0]
    return str(answer["predictions"][0]["label"])


def warm_up(running: Running, images: list[tuple[str, bytes]]) -> None:
    """A few requests before the clock starts (first calls allocate), and a correctness check."""
    label = predict_label(running.url, EXAMPLE_7.name, EXAMPLE_7.read_bytes())
    if label != "7":
        raise RuntimeError(f"{running.peer.name} answered {label!r} for examples/mnist/7.png")
    for name, data in images[:WARMUP_REQUESTS]:
        predict_label(running.url, name, data)


# ---------------------------------------------------------------- measurements


def in_process(images: list[tuple[str, bytes]], seconds: float) -> InProcess:
    """Row 6: decode + preprocess + onnxruntime (one thread) in this process, no HTTP."""
    session = common.ort_session(threads=1)
    input_name = session.get_inputs()[0].name
    spec = common.spec()
    blobs = [data for _, data in images]

    def timed(step: Callable[[int], int]) -> float:
        done, i, started = 0, 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            done += step(i)
            i += 1
        return done / elapsed

    def one(i: int) -> int:
        x = pixels_to_input(common.decode(blobs[i % len(blobs)]), spec)
        common.answers(session.run(None, {input_name: x})[0])
        return 1

    def thirty_two(i: int) -> int:
        start = (i * BATCH_SIZE) % len(blobs)
        chunk = [blobs[(start + j) % len(blobs)] for j in range(BATCH_SIZE)]
        x = pixels_to_input(np.stack([common.decode(b) for b in chunk]), spec)
        common.answers(session.run(None, {input_name: x})[0])
        return BATCH_SIZE

    timed(one)  # warm-up pass: the first calls allocate
    return InProcess(timed(one), timed(thirty_two))


def load(running: Running, out: Path, **options: Any) -> RunResult:
    """One Locust run against an idle server, with the other processes' CPU use meanwhile."""
    waited = settle(running.process.pid)
    if waited > 2:
        print(
            f"  (waited {waited:.0f} s for the server and the machine to go idle)", file=sys.stderr
        )
    with cpu_use(running.process.pid) as use:
        summary = run_locust(running.url, out_dir=out, **options)
    return RunResult.of(summary, use)


def closed_loop(running: Running, settings: Settings, out: Path) -> RunResult:
    return load(running, out, users=settings.users, duration_s=settings.duration_s)


def open_loop(running: Running, rate: float, seconds: float, out: Path) -> RunResult:
    return load(
        running, out, users=OPEN_LOOP_USERS, duration_s=seconds, rate=rate, slo_p99_ms=SLO_P99_MS
    )


def holds(result: RunResult) -> bool:
    return result.failures == 0 and result.p99_ms <= SLO_P99_MS


def search_max_rate(
    running: Running, start_rate: float, settings: Settings, out: Path, log: Callable[[str], None]
) -> tuple[float | None, list[RunResult]]:
    """The highest open-loop rate held with p99 <= 50 ms and no failures: step by 15% from
    start_rate until the answer flips, then bisect between the last pass and the first fail."""
    runs: list[RunResult] = []
    passed: float | None = None
    failed: float | None = None
    rate = max(1.0, start_rate)
    for n in range(settings.search_runs):
        result = open_loop(
            running, rate, settings.search_duration_s, out / f"search-{n + 1:02d}-{rate:.0f}"
        )
        runs.append(result)
        ok = holds(result)
        log(
            f"  open loop {rate:7.0f}/s: {result.success_rps:7.1f} ok/s, p99 "
            f"{result.p99_ms:6.1f} ms, {result.failures} failures, others "
            f"{result.others_cpu or 0:.2f} cores -> {'holds' if ok else 'no'}"
        )
        if ok:
            passed = rate if passed is None else max(passed, rate)
        else:
            failed = rate if failed is None else min(failed, rate)
        if passed is not None and failed is not None:
            rate = (passed + failed) / 2
            if failed - passed < 0.03 * failed:
                break
        elif passed is not None:
            rate *= 1.15
        else:
            rate *= 0.85
    return passed, runs


def measure_peer(
    peer: Peer,
    settings: Settings,
    images: list[tuple[str, bytes]],
    log: Callable[[str], None],
) -> tuple[PeerResult, ServiceExtras | None]:
    out = settings.out / f"{peer.key}-{peer.module.rsplit('.', 1)[-1]}"
    shutil.rmtree(out, ignore_errors=True)  # this row's outputs from an earlier bench run
    result = PeerResult(peer.key, peer.name)
    extras = ServiceExtras() if peer is SERVICE else None
    log(f"[{peer.key}] {peer.name}: starting")
    try:
        with serving(peer, out / "server.log") as running:
            result.ready_s = running.ready_s
            log(f"[{peer.key}] ready in {running.ready_s:.2f} s on port {running.port}")
            warm_up(running, images)
            result.single = closed_loop(running, settings, out / "closed")
            if (result.single.others_cpu or 0) > NOISY_CORES:
                # Someone else's load ran meanwhile: measure once more, keep the cleaner run.
                log(f"[{peer.key}] others used {result.single.others_cpu:.2f} cores: again")
                again = closed_loop(running, settings, out / "closed-again")
                result.repeated = True
                if (again.others_cpu or 0) < (result.single.others_cpu or 0):
                    result.single = again
            result.rss_mib = tree_rss_mib(running.process.pid)  # steady: right after the load
            s = result.single
            log(
                f"[{peer.key}] {settings.users} users: {s.success_rps:.1f} ok/s, p50 "
                f"{s.p50_ms:.1f} ms, p99 {s.p99_ms:.1f} ms, {s.failures} failures, "
                f"RSS {result.rss_mib:.0f} MiB, others {s.others_cpu or 0:.2f} cores"
            )
            if extras is not None:
                measure_service(running, s, settings, out, extras, log)
    except Exception as error:  # one broken peer must not lose the others' results
        result.error = f"{type(error).__name__}: {error}"
        log(f"[{peer.key}] failed: {result.error}")
    return result, extras


def measure_service(
    running: Running,
    single: RunResult,
    settings: Settings,
    out: Path,
    extras: ServiceExtras,
    log: Callable[[str], None],
) -> None:
    """Batch throughput, max open-loop rate within the SLO, and tail latency at 70% of it."""

    def batch() -> None:
        extras.batch = load(
            running,
            out / "batch",
            users=BATCH_USERS,
            duration_s=settings.duration_s,
            weights="batch=1",
            batch_size=BATCH_SIZE,
        )
        log(f"[1] /predict/batch x{BATCH_SIZE}: {extras.batch.images_per_s or 0:.0f} images/s")

    def search() -> None:
        extras.max_rate, extras.search = search_max_rate(
            running, 0.6 * single.success_rps, settings, out, log
        )
        log(f"[1] max open-loop rate within p99 <= {SLO_P99_MS:.0f} ms: {extras.max_rate}")

    def at70() -> None:
        if not extras.max_rate:
            raise RuntimeError("no open-loop rate held the SLO: nothing to take 70% of")
        rate = 0.7 * extras.max_rate
        extras.at70 = open_loop(running, rate, settings.duration_s, out / "at70")
        a = extras.at70
        log(f"[1] at 70% ({rate:.0f}/s): p50 {a.p50_ms:.1f} ms, p99 {a.p99_ms:.1f} ms")

    steps = [("batch", batch), ("max-rate search", search), ("70% run", at70)]
    for name, step in steps:
        try:
            step()
        except Exception as error:
            extras.errors.append(f"{name}: {type(error).__name__}: {error}")
            log(f"[1] {name} failed: {error}")


# ---------------------------------------------------------------- report


def machine() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {"python": platform.python_version()}
    for package in ("torch", "onnxruntime", "bentoml", "litserve", "locust", "fastapi", "uvicorn"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "ram": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "os": platform.platform(),
        **versions,
    }


def _f(value: float | None, digits: int = 0) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def _met(ok: bool | None) -> str:
    return "" if ok is None else ("met" if ok else "**missed**")


COLUMNS = (
    "#", "server / measurement", "ok req/s (img/s)", "p50 ms", "p99 ms", "failures",
    "server CPU by process (cores)", "others' CPU (cores)", "ready s", "RSS MiB",
    "this service vs it", "target", "",
)  # fmt: skip


def _row(key: str, name: str, run: RunResult | None, *, ok: str | None = None, **rest: str) -> str:
    """One table line; `rest` fills ready, rss, ratio, target and met by name."""
    cells = [key, name, "—", "—", "—", "—", "—", "—"]
    if run is not None:
        fails = str(run.failures) + (f" {run.failures_by_status}" if run.failures else "")
        others = "—" if run.others_cpu is None else f"{run.others_cpu:.2f}"
        if (run.others_cpu or 0) > NOISY_CORES:
            others += " (!)"
        server = " + ".join(f"{c:.2f}" for c in run.server_cpu) or "—"
        cells[2:] = [
            _f(run.success_rps),
            _f(run.p50_ms, 1),
            _f(run.p99_ms, 1),
            fails,
            server,
            others,
        ]
    if ok is not None:
        cells[2] = ok
    cells += [rest.get(k, "") for k in ("ready", "rss", "ratio", "target", "met")]
    return "| " + " | ".join(cells) + " |"


def table(results: list[PeerResult], extras: ServiceExtras | None, local: InProcess) -> str:
    """The one table: every server's closed-loop run, this service's ratio to each peer
    against its target, then this service's own measurements and the in-process rows."""
    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--|--|",
    ]
    service = next((r.single for r in results if r.key == SERVICE.key), None)
    for r in results:
        name = r.name if r.error is None else f"{r.name} — FAILED: {r.error[:160]}"
        if r.repeated:
            name += " (run twice: see others' CPU)"
        rest = {"ready": _f(r.ready_s, 2), "rss": _f(r.rss_mib)}
        if r.key in RATIO_TARGETS:
            rest["target"] = f">= {RATIO_TARGETS[r.key]:g}x, 0 failures"
            if r.single is not None and service is not None and r.single.success_rps > 0:
                value = service.success_rps / r.single.success_rps
                rest["ratio"] = f"{value:.2f}x"
                rest["met"] = _met(value >= RATIO_TARGETS[r.key] and service.failures == 0)
            elif service is not None:  # this service ran; the peer gave nothing to compare
                rest["met"] = _met(False)
        elif r.key == SERVICE.key:
            rest["ratio"] = "cold start"
            rest["target"] = f"ready <= {COLD_START_TARGET_S:g} s"
            rest["met"] = _met(r.ready_s is not None and r.ready_s <= COLD_START_TARGET_S)
        lines.append(_row(r.key, name, r.single, **rest))
    if extras is not None:
        b = extras.batch
        target = f">= {BATCH_FRACTION_TARGET:.0%} of 6b"
        name = f"/predict/batch, {BATCH_SIZE} images per request, {BATCH_USERS} users"
        if b is not None and b.images_per_s is not None:
            fraction = b.images_per_s / local.batch32_images_per_s
            ok = fraction >= BATCH_FRACTION_TARGET and b.failures == 0
            lines.append(
                _row(
                    "1",
                    name,
                    b,
                    ok=f"({_f(b.images_per_s)})",
                    ratio=f"{fraction:.0%} of 6b",
                    target=target,
                    met=_met(ok),
                )
            )
        else:
            lines.append(_row("1", name, None, target=target, met=_met(False)))
        name = f"max open-loop rate with p99 <= {SLO_P99_MS:g} ms, 0 failures"
        best = next((r for r in extras.search if holds(r) and r.rate == extras.max_rate), None)
        lines.append(
            _row(
                "1",
                name,
                best,
                ok=f"{_f(extras.max_rate)}/s" if best else "none held",
                ratio=f"{len(extras.search)} runs searched",
                met="" if best else _met(False),
            )
        )
        a = extras.at70
        target = f"p99 <= {P99_OVER_P50_TARGET:g}x p50"
        if a is not None and a.p50_ms > 0:
            spread = a.p99_ms / a.p50_ms
            ok = spread <= P99_OVER_P50_TARGET and a.failures == 0
            lines.append(
                _row(
                    "1",
                    f"open loop at 70% of max: {_f(a.rate)}/s",
                    a,
                    ratio=f"p99/p50 {spread:.2f}",
                    target=target,
                    met=_met(ok),
                )
            )
        else:
            lines.append(_row("1", "open loop at 70% of max", None, target=target, met=_met(False)))
    for key, size, value in (
        ("6a", 1, local.batch1_images_per_s),
        ("6b", BATCH_SIZE, local.batch32_images_per_s),
    ):
        name = f"in-process decode + ORT at batch {size}, 1 thread, no HTTP"
        lines.append(_row(key, name, None, ok=f"({_f(value)})"))
    return "\n".join(lines) + "\n"


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def markdown(settings: Settings, info: dict[str, str], body: str, started: datetime) -> str:
    versions = ", ".join(
        f"{k} {info[k]}"
        for k in ("python", "torch", "onnxruntime", "bentoml", "litserve", "locust", "fastapi",
                  "uvicorn")
    )  # fmt: skip
    return f"""# Benchmarks

This service against the servers a user could pick instead for the same model
(`exports/mnist-cnn/1`, 28 x 28 MNIST digits), each doing the same work per image: decode the
PNG, the manifest's preprocessing (canonicalisation included), the CNN, softmax and argmax.
See `bench/README.md` for what each peer is and why it is configured so.

- Machine: {info["cpu"]}, {info["cores"]} cores, {info["ram"]} RAM ({info["os"]});
  Locust shares the same cores as the server under test.
- Versions: {versions}.
- Command: `{settings.command}` (single-image runs: {settings.users} users, closed loop,
  {settings.duration_s:g} s each; open-loop search runs {settings.search_duration_s:g} s).
- Date: {started:%Y-%m-%d %H:%M} UTC.

{body}
How to read it: "server CPU by process" is the cores each of the server's processes used
during the run, busiest first (those under 0.05 left out): two processes near 1.0 each mean
both cores served, one near 1.0 and the other idle means the connections all went to one
worker; "ok req/s" counts successful answers per second (images/s in brackets; for
the max-rate row, the offered open-loop rate that held); "others' CPU" is what processes
outside the bench (neither the server, Locust nor the bench) used meanwhile on this shared
machine, in cores, marked (!) above {NOISY_CORES:g}: such a run was slowed by someone else
(a closed-loop run so marked is run once more and the cleaner of the two kept); "ready s" is
from process start to the first 200 from the server's readiness path (for multi-process
servers, the first process to answer); "RSS MiB" is the sum over the server's whole process
tree right after its single-image run; "this service vs it" is row 1's ok req/s divided by
the row's. Rows 6a/6b run in the bench process on one core with no HTTP.
Locust's per-run CSV files and HTML reports, server logs and results.json are under
`{_shown(settings.out)}/`.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per load run")
    parser.add_argument("--users", type=int, default=32, help="closed-loop users (default 32)")
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="Locust outputs")
    parser.add_argument(
        "--quick", action="store_true", help="5 s runs, 4 search steps; writes no BENCHMARKS.md"
    )
    parser.add_argument(
        "--only", help="comma-separated row keys to run (e.g. 1,5); row 6 always runs"
    )
    args = parser.parse_args(argv)
    if args.users < 1 or args.duration <= 0:
        parser.error("--users and --duration must be positive")
    quick = args.quick
    out = args.out if args.out.is_absolute() else ROOT / args.out
    settings = Settings(
        users=args.users,
        duration_s=5.0 if quick else args.duration,
        search_runs=4 if quick else 8,
        search_duration_s=5.0 if quick else 10.0,
        inprocess_s=2.0 if quick else 5.0,
        out=out,
        write_md=None if quick or args.only else BENCHMARKS_MD,
        only=args.only.split(",") if args.only else None,
        command=" ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])]),
    )
    out.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    images = load_images()
    if settings.only is None or {"2a", "2b"} & set(settings.only):
        log("training the naive peer's torch checkpoint if missing (deterministic, ~10 s)")
        common.ensure_checkpoint()
    log(f"[6] in-process decode + onnxruntime, {settings.inprocess_s:g} s per batch size")
    settle(None)
    local = in_process(images, settings.inprocess_s)
    log(
        f"[6] batch 1: {local.batch1_images_per_s:.0f} images/s; batch {BATCH_SIZE}: "
        f"{local.batch32_images_per_s:.0f} images/s"
    )
    results: list[PeerResult] = []
    extras: ServiceExtras | None = None
    for peer in PEERS:
        if settings.only is not None and peer.key not in settings.only:
            continue
        result, peer_extras = measure_peer(peer, settings, images, log)
        results.append(result)
        extras = peer_extras or extras
    body = table(results, extras, local)
    if extras is not None and extras.search:
        steps = [
            f"{r.rate or 0:.0f}/s: p99 {r.p99_ms:.0f} ms, {r.failures} failures "
            f"({'held' if holds(r) else 'no'})"
            for r in extras.search
        ]
        body += "\nOpen-loop search for row 1, in order: " + "; ".join(steps) + ".\n"
    if extras is not None and extras.errors:
        body += "\nErrors: " + "; ".join(extras.errors) + "\n"
    print(body)
    info = machine()
    document = markdown(settings, info, body, started)
    (out / "BENCHMARKS.md").write_text(document)
    (out / "results.json").write_text(
        json.dumps(
            {
                "settings": {
                    **asdict(settings),
                    "out": str(out),
                    "write_md": str(settings.write_md),
                },
                "machine": info,
                "in_process": asdict(local),
                "peers": [asdict(r) for r in results],
                "service": asdict(extras) if extras else None,
            },
            indent=2,
        )
        + "\n"
    )
    if settings.write_md is not None:
        settings.write_md.write_text(document)
        log(f"wrote {settings.write_md}")
    log(f"Locust outputs, server logs and results.json under {out}/")
    return 0 if all(r.error is None for r in results) else 1
