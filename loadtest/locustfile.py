"""Locust users for the digitserve endpoints, configured by environment variables.

LOADTEST_WEIGHTS      `predict=8,batch=1,json=1,explain=1` (default `predict=1`): users per
                      endpoint; an endpoint with weight 0 gets no users.
LOADTEST_BATCH_SIZE   images per /predict/batch request (default 32).
LOADTEST_MODEL        the `model` field of every request (default: the server's default).
LOADTEST_RATE         open loop: requests/s over all users (default: closed loop).
LOADTEST_USERS        the user count the rate is shared by (default: Locust's -u).
LOADTEST_MAX_INFLIGHT open loop: requests in flight per user (default 256).

Closed loop: every user sends its next request as soon as the last one is answered, so the
server's latency throttles the load. Open loop: every user is an arrival generator firing
rate/users requests/s on a fixed schedule, each request in its own greenlet, so a slow answer
never delays the next arrival; the response time counts from the scheduled arrival, so
queueing (on either side) is measured rather than hidden (no coordinated omission).

Request bodies are encoded once at start-up: the client's CPU goes to sending, not encoding.
"""

from __future__ import annotations

import base64
import csv
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

from gevent.pool import Pool  # type: ignore[import-untyped]  # gevent ships no stubs
from locust import FastHttpUser, events, task
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

from loadtest.images import load_images
from loadtest.runner import ENDPOINTS, parse_weights


class ClientOverloaded(Exception):
    """An open-loop arrival found its user's in-flight bound full: the client, not the server,
    could not keep the schedule."""


def _env_int(name: str, default: int, low: int, high: int) -> int:
    text = os.environ.get(name, "").strip()
    try:
        value = int(text) if text else default
    except ValueError:
        sys.exit(f"loadtest: {name}={text!r} is not an integer")
    if not low <= value <= high:
        sys.exit(f"loadtest: {name}={value} is outside {low}..{high}")
    return value


def _env_rate() -> float | None:
    text = os.environ.get("LOADTEST_RATE", "").strip()
    if not text:
        return None
    try:
        rate = float(text)
    except ValueError:
        sys.exit(f"loadtest: LOADTEST_RATE={text!r} is not a number")
    if not rate > 0 or rate == float("inf"):
        sys.exit(f"loadtest: LOADTEST_RATE={text!r} must be > 0")
    return rate


try:
    WEIGHTS = parse_weights(os.environ.get("LOADTEST_WEIGHTS", "predict=1,batch=0,json=0"))
except ValueError as error:
    # Locust refuses to start without a user class of weight > 0; say why in our words.
    sys.exit(f"loadtest: LOADTEST_WEIGHTS: {error}")
BATCH_SIZE = _env_int("LOADTEST_BATCH_SIZE", 32, 1, 64)
MAX_INFLIGHT = _env_int("LOADTEST_MAX_INFLIGHT", 256, 1, 100_000)
RATE = _env_rate()
MODEL = os.environ.get("LOADTEST_MODEL", "").strip() or None

BOUNDARY = "loadtest-5c0b1f3e9a7d4e26"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


def multipart(fields: list[tuple[str, str]], files: list[tuple[str, str, bytes]]) -> bytes:
    """A multipart/form-data body: (name, value) fields and (name, filename, data) files."""
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields
    ]
    parts += [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
        f"Content-Type: image/png\r\n\r\n".encode()
        + data
        + b"\r\n"
        for name, filename, data in files
    ]
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


IMAGES = load_images()
FIELDS = [("model", MODEL)] if MODEL else []


def predict_bodies() -> list[bytes]:
    return [multipart(FIELDS, [("image", name, data)]) for name, data in IMAGES]


def batch_bodies(count: int = 64) -> list[bytes]:
    rng = random.Random(0)
    return [
        multipart(FIELDS, [("images", name, data) for name, data in rng.sample(IMAGES, BATCH_SIZE)])
        for _ in range(count)
    ]


def json_bodies() -> list[bytes]:
    extra = {"model": MODEL} if MODEL else {}
    return [
        json.dumps({"image_base64": base64.b64encode(data).decode(), **extra}).encode()
        for _, data in IMAGES
    ]


class _EndpointUser(FastHttpUser):
    """Posts one of its pre-encoded bodies to its endpoint, closed or open loop."""

    abstract = True
    path: ClassVar[str]
    content_type: ClassVar[str]
    expect: ClassVar[bytes]  # a key every successful answer holds
    bodies: ClassVar[list[bytes]]
    # One connection per request in flight: the open loop's bound decides, not the pool.
    concurrency = MAX_INFLIGHT if RATE is not None else 1
    network_timeout = 30.0
    connection_timeout = 10.0

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self._inflight = Pool(MAX_INFLIGHT)
        self._interval = 0.0
        self._next_arrival = 0.0

    def on_start(self) -> None:
        if RATE is None:
            return
        options = getattr(self.environment, "parsed_options", None)
        users = _env_int("LOADTEST_USERS", int(getattr(options, "num_users", 0) or 1), 1, 100_000)
        self._interval = users / RATE
        # Stagger the generators over one interval so their arrivals interleave, not bunch.
        self._next_arrival = time.perf_counter() + random.uniform(0, self._interval)

    def wait_time(self) -> float:
        if RATE is None:
            return 0.0
        return max(0.0, self._next_arrival - time.perf_counter())

    @task
    def send(self) -> None:
        if RATE is None:
            self._post(None)
            return
        # Sleep (in Locust's wait) until the next arrival, then fire every arrival that is due:
        # a late generator catches up instead of silently lowering the rate.
        while self._next_arrival <= time.perf_counter():
            scheduled = self._next_arrival
            self._next_arrival += self._interval
            if self._inflight.full():
                self._report_overload()
            else:
                self._inflight.spawn(self._post, scheduled)

    def _post(self, scheduled: float | None) -> None:
        with self.client.post(
            self.path,
            # geventhttpclient sends bytes as they are; locust's hint says str | dict.
            data=random.choice(self.bodies),  # type: ignore[arg-type]
            headers={"Content-Type": self.content_type},
            name=self.path,
            catch_response=True,
        ) as response:
            if scheduled is not None:
                # From the scheduled arrival: waiting for a greenlet or connection counts.
                response.request_meta["response_time"] = (time.perf_counter() - scheduled) * 1000
            if response.status_code == 200 and self.expect not in (response.content or b""):
                response.failure(f"unexpected answer: {(response.content or b'')[:200]!r}")

    def _report_overload(self) -> None:
        self.environment.events.request.fire(
            request_type="POST",
            name=self.path,
            # Never sent, so no latency: None counts the request and the failure but keeps a
            # flood of ~0 ms entries out of the percentiles.
            response_time=None,
            response_length=0,
            response=None,
            context={},
            exception=ClientOverloaded(
                f"client overloaded: {len(self._inflight)} requests in flight"
            ),
        )

    def on_stop(self) -> None:
        # Let requests already sent finish (bounded, inside Locust's --stop-timeout) so their
        # latencies, usually the slowest, are counted; then drop what is left.
        self._inflight.join(timeout=3)
        self._inflight.kill(block=True, timeout=1)


class PredictUser(_EndpointUser):
    """POST /predict with one random real image as the multipart part `image`."""

    weight = WEIGHTS["predict"]
    abstract = weight == 0
    path = ENDPOINTS["predict"]
    content_type = MULTIPART
    expect = b'"predictions"'
    bodies = predict_bodies() if weight else []


class BatchUser(_EndpointUser):
    """POST /predict/batch with LOADTEST_BATCH_SIZE random real images as `images` parts."""

    weight = WEIGHTS["batch"]
    abstract = weight == 0
    path = ENDPOINTS["batch"]
    content_type = MULTIPART
    expect = b'"results"'
    bodies = batch_bodies() if weight else []


class ExplainUser(_EndpointUser):
    """POST /explain with one random real image as the multipart part `image` (its answer
    holds the occlusion map, which only /explain gives)."""

    weight = WEIGHTS["explain"]
    abstract = weight == 0
    path = ENDPOINTS["explain"]
    content_type = MULTIPART
    expect = b'"occlusion"'
    bodies = predict_bodies() if weight else []


class JsonUser(_EndpointUser):
    """POST /predict/json with a random real image as base64."""

    weight = WEIGHTS["json"]
    abstract = weight == 0
    path = ENDPOINTS["json"]
    content_type = "application/json"
    expect = b'"predictions"'
    bodies = json_bodies() if weight else []


_ENVIRONMENT: list[Any] = []


@events.init.add_listener
def remember_environment(environment: Any, **_: Any) -> None:
    _ENVIRONMENT.append(environment)


@events.quit.add_listener
def write_final_csv(**_: Any) -> None:
    """Write the final stats and failures CSV files once every user has stopped.

    Locust's CSV writer rewrites them once a second and is not run again at shutdown, so on
    their own they miss the last second (and the requests drained at stop).
    """
    if not _ENVIRONMENT:
        return
    environment = _ENVIRONMENT[-1]
    prefix = getattr(environment.parsed_options, "csv_prefix", None)
    if not prefix:
        return
    writer = StatsCSV(environment, PERCENTILES_TO_REPORT)
    for suffix, write in (("stats", writer.requests_csv), ("failures", writer.failures_csv)):
        # Written whole, then renamed: a reader never sees half a file.
        path = Path(f"{prefix}_{suffix}.csv")
        temporary = path.with_name(path.name + ".tmp")
        with temporary.open("w", newline="") as file:
            write(csv.writer(file))
        temporary.replace(path)
