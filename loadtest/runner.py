"""Run Locust headless in a subprocess against a host and summarise its CSV output.

Locust runs as a separate process (its own process group, bounded by a timeout) because it
monkey-patches the standard library with gevent at import: the caller stays a plain process.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from loadtest.protocols import Target
from loadtest.server_stats import MetricsUnavailable, Totals, scrape, server_split

LOCUSTFILE = Path(__file__).resolve().with_name("locustfile.py")
ROOT = LOCUSTFILE.parents[1]
ENDPOINTS = {
    "predict": "/predict",
    "batch": "/predict/batch",
    "json": "/predict/json",
    "explain": "/explain",
}
DEFAULT_WEIGHTS = "predict=1"
# Past the run itself: Locust's start-up, --stop-timeout and writing its reports.
TIMEOUT_MARGIN_S = 60
STOP_TIMEOUT_S = 5


@dataclass(frozen=True)
class Summary:
    """One load level, as measured by Locust (times in milliseconds)."""

    host: str
    users: int
    duration_s: float
    rate: float | None
    requests: int
    failures: int
    rps: float  # successful + failed requests per second, Locust's Aggregated row
    success_rps: float  # (requests - failures) / measured duration
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    failures_by_status: dict[str, int]  # e.g. {"503": 12, "client overloaded": 3}
    endpoints: dict[str, dict[str, float]]  # per stats row: requests, failures, rps, p50_ms, ...
    images_per_s: float | None  # successful /predict/batch requests/s x batch size
    slo_p99_ms: float | None
    slo_met: bool  # p99 <= slo (or no slo) and no failures
    # Added with --protocol; defaults keep older summary.json files readable.
    protocol: str = "http"
    batch: int | None = None  # rows per V2/gRPC request (None for http)
    tensors_per_s: float | None = None  # successful V2/gRPC requests/s x batch
    mean_ms: float = 0.0  # Locust's average response time, all requests
    server: dict[str, Any] | None = None  # the server's split (server_stats.server_split)
    server_note: str | None = None  # why there is no split, or what to mind in it

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Summary:
        return cls(**json.loads(text))


def parse_weights(text: str) -> dict[str, int]:
    """`predict=8,batch=1,json=1` -> {"predict": 8, "batch": 1, "json": 1}; names left out are 0.

    Raises ValueError for unknown names, non-integer or negative weights, or no weight above 0.
    """
    weights = dict.fromkeys(ENDPOINTS, 0)
    seen: set[str] = set()
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, value = item.partition("=")
        name = name.strip().lower()
        if not sep:
            raise ValueError(f"weight {item!r}: expected NAME=INT, e.g. predict=8")
        if name not in ENDPOINTS:
            raise ValueError(
                f"weight {item!r}: unknown name {name!r} (one of {', '.join(ENDPOINTS)})"
            )
        if name in seen:
            raise ValueError(f"weight {item!r}: {name} given twice")
        try:
            weight = int(value.strip())
        except ValueError:
            raise ValueError(f"weight {item!r}: {value.strip()!r} is not an integer") from None
        if weight < 0:
            raise ValueError(f"weight {item!r}: must be >= 0")
        seen.add(name)
        weights[name] = weight
    if not any(weights.values()):
        raise ValueError(f"weights {text!r}: at least one of {', '.join(ENDPOINTS)} must be > 0")
    return weights


_DURATION = re.compile(r"(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+(?:\.\d+)?)s)?")


def parse_duration(text: str) -> float:
    """`30s`, `2m`, `1m30s`, `1h`, `45` (seconds) -> seconds. Raises ValueError."""
    text = text.strip().lower()
    try:
        seconds = float(text)
    except ValueError:
        match = _DURATION.fullmatch(text)
        if not text or match is None:
            raise ValueError(f"duration {text!r}: expected e.g. 30s, 2m, 1m30s or 45") from None
        seconds = int(match["h"] or 0) * 3600 + int(match["m"] or 0) * 60 + float(match["s"] or 0)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"duration {text!r}: must be > 0")
    return seconds


_GRPC_STATUS = re.compile(r"\bgrpc ([A-Z][A-Z_]+)\b")
_STATUS_CODE = re.compile(r"(?:code=|status(?: code)?[ =:]*|\bHTTP )(\d{3})\b", re.IGNORECASE)
_LEADING_STATUS = re.compile(r"^(?:\w+\(['\"])?(\d{3})\b")
_TIMEOUT = ("timeout", "timed out")
_CONNECTION = (
    "connection",
    "refused",
    "reset by peer",
    "broken pipe",
    "remotedisconnected",
    "emptyresponse",
    "retriesexceeded",
    "errno",
    "socket",
    "gaierror",
    "name or service not known",
    "eof occurred",
)


def failure_status(error: str) -> str:
    """Map one Locust failure text (the Error column of locust_failures.csv) to a status.

    `BadStatusCode('http://127.0.0.1:3000/predict', code=503)` -> "503"; our own in-flight
    bound -> "client overloaded"; a timeout -> "timeout"; refused/reset/closed -> "connection";
    anything else (e.g. an unexpected response body) -> "other". A gRPC status,
    `GrpcStatusError('grpc UNAVAILABLE: ...')`, is its code's name: "UNAVAILABLE".
    """
    lowered = error.lower()
    if "client overloaded" in lowered:
        return "client overloaded"
    grpc_status = _GRPC_STATUS.search(error)
    if grpc_status:
        return grpc_status[1]
    match = _STATUS_CODE.search(error) or _LEADING_STATUS.search(error)
    if match:
        return match[1]
    if any(word in lowered for word in _TIMEOUT):
        return "timeout"
    if any(word in lowered for word in _CONNECTION):
        return "connection"
    return "other"


def _number(value: str | None) -> float:
    """A CSV cell as a float; Locust writes N/A (or nothing) where it has no data."""
    try:
        result = float(value or "nan")
    except ValueError:
        return 0.0
    return result if math.isfinite(result) else 0.0


def read_stats(path: Path) -> dict[str, dict[str, float]]:
    """locust_stats.csv -> {row name: {requests, failures, rps, success_rps, p50_ms, ...}}."""
    rows: dict[str, dict[str, float]] = {}
    with path.open(newline="") as file:
        for row in csv.DictReader(file):
            requests = int(_number(row.get("Request Count")))
            failures = int(_number(row.get("Failure Count")))
            rps = _number(row.get("Requests/s"))
            rows[row["Name"]] = {
                "requests": requests,
                "failures": failures,
                "rps": rps,
                "success_rps": rps * (requests - failures) / requests if requests else 0.0,
                "mean_ms": _number(row.get("Average Response Time")),
                "p50_ms": _number(row.get("50%")),
                "p95_ms": _number(row.get("95%")),
                "p99_ms": _number(row.get("99%")),
                "max_ms": _number(row.get("Max Response Time")),
            }
    return rows


def read_failures(path: Path) -> dict[str, int]:
    """locust_failures.csv -> occurrences by status (see failure_status), largest first."""
    counts: dict[str, int] = {}
    if path.exists():
        with path.open(newline="") as file:
            for row in csv.DictReader(file):
                status = failure_status(row.get("Error") or "")
                counts[status] = counts.get(status, 0) + int(_number(row.get("Occurrences")))
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def summarise(
    out_dir: Path,
    *,
    host: str,
    users: int,
    duration_s: float,
    rate: float | None,
    batch_size: int,
    slo_p99_ms: float | None,
    target: Target | None = None,
) -> Summary:
    """Build the Summary from Locust's CSV files in out_dir (tensors/s from `target`'s batch
    for the V2 and gRPC protocols)."""
    stats_path = out_dir / "locust_stats.csv"
    if not stats_path.exists():
        raise RuntimeError(f"Locust wrote no {stats_path.name}")
    rows = read_stats(stats_path)
    total = rows.pop("Aggregated", None)
    if total is None or total["requests"] == 0:
        raise RuntimeError("Locust recorded no requests")
    failures_by_status = read_failures(out_dir / "locust_failures.csv")
    requests, failures = int(total["requests"]), int(total["failures"])
    if failures == requests and set(failures_by_status) <= {"connection", "timeout"}:
        raise RuntimeError(f"every request failed to connect to {host}: {failures_by_status}")
    batch = rows.get(ENDPOINTS["batch"])
    images_per_s = batch["success_rps"] * batch_size if batch and batch["requests"] else None
    tensors = target is not None and target.protocol != "http"
    p99 = total["p99_ms"]
    return Summary(
        host=host,
        users=users,
        duration_s=duration_s,
        rate=rate,
        requests=requests,
        failures=failures,
        rps=total["rps"],
        success_rps=total["success_rps"],
        p50_ms=total["p50_ms"],
        p95_ms=total["p95_ms"],
        p99_ms=p99,
        max_ms=total["max_ms"],
        failures_by_status=failures_by_status,
        endpoints=dict(sorted(rows.items())),
        images_per_s=images_per_s,
        slo_p99_ms=slo_p99_ms,
        slo_met=(slo_p99_ms is None or p99 <= slo_p99_ms) and failures == 0,
        protocol=target.protocol if target is not None else "http",
        batch=target.batch if tensors and target is not None else None,
        tensors_per_s=total["success_rps"] * target.batch if tensors and target else None,
        mean_ms=total["mean_ms"],
    )


def with_server_split(summary: Summary, target: Target, before: Totals, after: Totals) -> Summary:
    """The summary with the server's split of the requests made between the two scrapes."""
    assert target.model is not None and target.version is not None
    split = server_split(
        before,
        after,
        model=target.model,
        version=target.version,
        client_p50_ms=summary.p50_ms,
        client_p99_ms=summary.p99_ms,
        client_mean_ms=summary.mean_ms,
    )
    succeeded = summary.requests - summary.failures
    note: str | None = None
    if split["requests"] == 0:
        note = (
            f"no server-side split: /metrics counted no requests of {target.model} "
            f"{target.version} during the run"
        )
        return replace(summary, server=None, server_note=note)
    if split["requests"] != succeeded:
        note = (
            f"the server answered {split['requests']:,} requests of {target.model} "
            f"{target.version} during the run, {succeeded:,} of the load test's succeeded "
            "(another client, or requests cut off at the end)"
        )
    return replace(summary, server=split, server_note=note)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """Stop the Locust process group this module started (TERM, then KILL)."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass


def run_locust(
    host: str,
    *,
    users: int,
    duration_s: float,
    out_dir: Path,
    rate: float | None = None,
    weights: str = DEFAULT_WEIGHTS,
    batch_size: int = 32,
    model: str | None = None,
    slo_p99_ms: float | None = None,
    spawn_rate: float | None = None,
    target: Target | None = None,
) -> Summary:
    """Run Locust headless against host for duration_s and return its Summary.

    Closed loop (each user sends its next request when the last one answered) unless rate is
    given: then `users` arrival generators send `rate` requests/s in total on a fixed schedule.
    Writes Locust's CSV files, report.html, locust.log and summary.json into out_dir.
    Raises ValueError for bad arguments and RuntimeError when Locust measured nothing.

    `target` (loadtest.protocols) picks the protocol (http when None) and names the model
    version driven: with one, {host}/metrics is read before and after the run and the summary
    holds the server's split of that model version's requests (or a server_note saying why
    not). The tensor protocols need a target from prepare_tensor_target.
    """
    parsed_weights = parse_weights(weights)
    if users < 1:
        raise ValueError("users must be >= 1")
    if rate is not None and not (math.isfinite(rate) and rate > 0):
        raise ValueError("rate must be > 0")
    if not 1 <= batch_size <= 64:
        raise ValueError("batch_size must be in 1..64 (the service's per-request limit)")
    # Locust's -t takes whole seconds.
    seconds = max(1, round(duration_s))
    # Absolute: Locust runs with out_dir as its working directory, so a relative --csv path
    # would land in out_dir/out_dir.
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("locust_*.csv"):
        stale.unlink()
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "-u",
        str(users),
        "-r",
        f"{spawn_rate if spawn_rate is not None else users:g}",
        "-t",
        f"{seconds}s",
        "--host",
        host.rstrip("/"),
        "--csv",
        str(out_dir / "locust"),
        "--html",
        str(out_dir / "report.html"),
        "--only-summary",
        "--stop-timeout",
        str(STOP_TIMEOUT_S),
        "--loglevel",
        "WARNING",
    ]
    env = {
        **os.environ,
        "LOADTEST_WEIGHTS": ",".join(f"{k}={v}" for k, v in parsed_weights.items()),
        "LOADTEST_BATCH_SIZE": str(batch_size),
        "LOADTEST_USERS": str(users),
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
        ),
    }
    protocol = target.protocol if target is not None else "http"
    env["LOADTEST_PROTOCOL"] = protocol
    env.pop("LOADTEST_TARGET", None)
    if target is not None and protocol != "http":
        if target.tensors_path is None:
            raise ValueError(f"protocol {protocol}: the target has no tensors")
        target_path = out_dir / "target.json"
        target_path.write_text(target.to_json())
        env["LOADTEST_TARGET"] = str(target_path)
    for name, value in (("LOADTEST_RATE", rate), ("LOADTEST_MODEL", model)):
        if value is None:
            env.pop(name, None)
        else:
            env[name] = str(value)
    # Locust reads LOCUST_* variables as options: only the command line may shape a run.
    for name in [name for name in env if name.startswith("LOCUST_")]:
        del env[name]
    split = target is not None and target.model is not None
    before: Totals | None = None
    note: str | None = None
    if split:
        try:
            before = scrape(host)
        except MetricsUnavailable as error:
            note = f"no server-side split: {error}"
    log_path = out_dir / "locust.log"
    timeout_s = seconds + TIMEOUT_MARGIN_S
    started = time.monotonic()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=out_dir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _stop_group(process)
            raise RuntimeError(
                f"Locust did not finish within {timeout_s} s; stopped it. Log tail:\n"
                f"{_tail(log_path)}"
            ) from None
        finally:
            _stop_group(process)
    try:
        summary = summarise(
            out_dir,
            host=host,
            users=users,
            duration_s=float(seconds),
            rate=rate,
            batch_size=batch_size,
            slo_p99_ms=slo_p99_ms,
            target=target,
        )
    except RuntimeError as error:
        raise RuntimeError(
            f"{error} (Locust exit {process.returncode} after "
            f"{time.monotonic() - started:.0f} s). Log tail ({log_path}):\n{_tail(log_path)}"
        ) from None
    if before is not None and target is not None:
        try:
            summary = with_server_split(summary, target, before, scrape(host))
        except MetricsUnavailable as error:
            note = f"no server-side split: {error}"
    elif target is not None and target.model is None:
        note = "no server-side split: GET /models did not say which model answers"
    if note is not None:
        summary = replace(summary, server_note=note)
    (out_dir / "summary.json").write_text(summary.to_json())
    return summary
