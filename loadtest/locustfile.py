"""Locust users for the digitserve endpoints, configured by environment variables.

LOADTEST_WEIGHTS      `predict=8,batch=1,json=1,explain=1` (default `predict=1`): users per
                      endpoint; an endpoint with weight 0 gets no users.
LOADTEST_BATCH_SIZE   images per /predict/batch request (default 32).
LOADTEST_MODEL        the `model` field of every request (default: the server's default).
LOADTEST_RATE         open loop: requests/s over all users (default: closed loop).
LOADTEST_USERS        the user count the rate is shared by (default: Locust's -u).
LOADTEST_MAX_INFLIGHT open loop: requests in flight per user (default 256).
LOADTEST_PROTOCOL     http (default: the endpoints above), v2-json, v2-binary or grpc: the
                      Open Inference Protocol's infer over REST (JSON values or the binary
                      tensor extension) or gRPC, one user class, LOADTEST_WEIGHTS ignored.
LOADTEST_TARGET       for v2-json, v2-binary and grpc: the target.json `python -m loadtest`
                      writes (model, version, input, rows per request, gRPC address and the
                      preprocessed tensors' .npy file; see loadtest/protocols.py).

Closed loop: every user sends its next request as soon as the last one is answered, so the
server's latency throttles the load. Open loop: every user is an arrival generator firing
rate/users requests/s on a fixed schedule, each request in its own greenlet, so a slow answer
never delays the next arrival; the response time counts from the scheduled arrival, so
queueing (on either side) is measured rather than hidden (no coordinated omission).

Request bodies are encoded once at start-up: the client's CPU goes to sending, not encoding.
gRPC requests go through grpcio made cooperative with gevent (as Locust's own gRPC users do),
each answer fired as a Locust request event, so they are counted like the HTTP ones.
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
from locust import FastHttpUser, User, events, task
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

from loadtest.images import load_images
from loadtest.protocols import (
    GRPC_OPTIONS,
    PROTOCOLS,
    REQUEST_TIMEOUT_S,
    Target,
    bodies,
    load_pool,
)
from loadtest.runner import ENDPOINTS, parse_weights


class ClientOverloaded(Exception):
    """An open-loop arrival found its user's in-flight bound full: the client, not the server,
    could not keep the schedule."""


class GrpcStatusError(Exception):
    """A ModelInfer call that ended with a gRPC status other than OK: `grpc CODE: details`."""


class UnexpectedAnswer(Exception):
    """An answer without what every successful answer holds."""


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
PROTOCOL = os.environ.get("LOADTEST_PROTOCOL", "").strip().lower() or "http"
if PROTOCOL not in PROTOCOLS:
    sys.exit(f"loadtest: LOADTEST_PROTOCOL={PROTOCOL!r} is not one of {', '.join(PROTOCOLS)}")


def _target() -> Target | None:
    if PROTOCOL == "http":
        return None
    path = os.environ.get("LOADTEST_TARGET", "").strip()
    if not path:
        sys.exit(f"loadtest: LOADTEST_PROTOCOL={PROTOCOL} needs LOADTEST_TARGET (a target.json)")
    try:
        target = Target.from_json(Path(path).read_text())
    except (OSError, ValueError, TypeError, KeyError) as error:
        sys.exit(f"loadtest: LOADTEST_TARGET={path}: {error}")
    if target.protocol != PROTOCOL:
        sys.exit(f"loadtest: {path} is for {target.protocol}, not {PROTOCOL}")
    return target


TARGET = _target()
if PROTOCOL == "grpc":
    # Before any gRPC object exists, after gevent's patching (locust's import did it).
    import grpc
    import grpc.experimental.gevent as grpc_gevent
    from tritonclient.grpc import service_pb2

    grpc_gevent.init_gevent()

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


def tensor_bodies() -> list[tuple[bytes, dict[str, str]]]:
    """The target's requests (the preprocessed real digits, its batch of rows each)."""
    assert TARGET is not None
    return [(body.data, body.headers) for body in bodies(load_pool(TARGET), TARGET)]


class _Arrivals(User):
    """Sends requests (`_post`) closed loop, or open loop on a fixed arrival schedule."""

    abstract = True
    path: ClassVar[str]  # the name of its requests in Locust's statistics
    request_type: ClassVar[str] = "POST"

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
        """Send one request; its latency counts from `scheduled` when given (open loop)."""
        raise NotImplementedError

    def _report_overload(self) -> None:
        self.environment.events.request.fire(
            request_type=self.request_type,
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


class _EndpointUser(_Arrivals, FastHttpUser):
    """Posts one of its pre-encoded bodies to its endpoint, closed or open loop."""

    abstract = True
    expect: ClassVar[bytes]  # a key every successful answer holds
    bodies: ClassVar[list[tuple[bytes, dict[str, str]]]]  # (body, headers)
    # One connection per request in flight: the open loop's bound decides, not the pool.
    concurrency = MAX_INFLIGHT if RATE is not None else 1
    network_timeout = REQUEST_TIMEOUT_S
    connection_timeout = 10.0

    def _post(self, scheduled: float | None) -> None:
        data, headers = random.choice(self.bodies)
        with self.client.post(
            self.path,
            # geventhttpclient sends bytes as they are; locust's hint says str | dict.
            data=data,  # type: ignore[arg-type]
            headers=headers,
            name=self.path,
            catch_response=True,
        ) as response:
            if scheduled is not None:
                # From the scheduled arrival: waiting for a greenlet or connection counts.
                response.request_meta["response_time"] = (time.perf_counter() - scheduled) * 1000
            if response.status_code == 200 and self.expect not in (response.content or b""):
                response.failure(f"unexpected answer: {(response.content or b'')[:200]!r}")


def _multipart_bodies(encoded: list[bytes]) -> list[tuple[bytes, dict[str, str]]]:
    return [(body, {"Content-Type": MULTIPART}) for body in encoded]


class PredictUser(_EndpointUser):
    """POST /predict with one random real image as the multipart part `image`."""

    weight = WEIGHTS["predict"]
    abstract = weight == 0 or PROTOCOL != "http"
    path = ENDPOINTS["predict"]
    expect = b'"predictions"'
    bodies = [] if abstract else _multipart_bodies(predict_bodies())


class BatchUser(_EndpointUser):
    """POST /predict/batch with LOADTEST_BATCH_SIZE random real images as `images` parts."""

    weight = WEIGHTS["batch"]
    abstract = weight == 0 or PROTOCOL != "http"
    path = ENDPOINTS["batch"]
    expect = b'"results"'
    bodies = [] if abstract else _multipart_bodies(batch_bodies())


class ExplainUser(_EndpointUser):
    """POST /explain with one random real image as the multipart part `image` (its answer
    holds the occlusion map, which only /explain gives)."""

    weight = WEIGHTS["explain"]
    abstract = weight == 0 or PROTOCOL != "http"
    path = ENDPOINTS["explain"]
    expect = b'"occlusion"'
    bodies = [] if abstract else _multipart_bodies(predict_bodies())


class JsonUser(_EndpointUser):
    """POST /predict/json with a random real image as base64."""

    weight = WEIGHTS["json"]
    abstract = weight == 0 or PROTOCOL != "http"
    path = ENDPOINTS["json"]
    expect = b'"predictions"'
    bodies = [] if abstract else [(b, {"Content-Type": "application/json"}) for b in json_bodies()]


class V2User(_EndpointUser):
    """POST /v2/models/{name}/versions/{v}/infer with the target's preprocessed real digits,
    as JSON values (v2-json) or raw bytes after a JSON header (v2-binary)."""

    weight = 1
    abstract = PROTOCOL not in ("v2-json", "v2-binary")
    path = "" if TARGET is None else TARGET.infer_path
    expect = b'"outputs"'
    bodies = [] if abstract else tensor_bodies()


class GrpcUser(_Arrivals):
    """inference.GRPCInferenceService/ModelInfer with the target's preprocessed real digits as
    raw_input_contents, one channel (HTTP/2 connection) per user; each answer, or gRPC
    status, is fired as a Locust request event."""

    weight = 1
    abstract = PROTOCOL != "grpc"
    path = "" if TARGET is None else TARGET.stats_name
    request_type = "grpc"
    bodies: ClassVar[list[bytes]] = [] if abstract else [data for data, _ in tensor_bodies()]

    def on_start(self) -> None:
        assert TARGET is not None and TARGET.grpc_target is not None
        self._channel = grpc.insecure_channel(TARGET.grpc_target, options=GRPC_OPTIONS)
        self._infer = self._channel.unary_unary(
            self.path,
            request_serializer=None,  # the bodies are serialized ModelInferRequests already
            response_deserializer=service_pb2.ModelInferResponse.FromString,
        )
        super().on_start()

    def _post(self, scheduled: float | None) -> None:
        assert TARGET is not None
        started = time.perf_counter()
        length = 0
        exception: Exception | None = None
        try:
            answer = self._infer(random.choice(self.bodies), timeout=REQUEST_TIMEOUT_S)
            length = answer.ByteSize()
            if not answer.outputs or answer.outputs[0].shape[:1] != [TARGET.batch]:
                exception = UnexpectedAnswer(f"unexpected answer: {str(answer)[:200]!r}")
        except grpc.RpcError as error:
            exception = GrpcStatusError(f"grpc {error.code().name}: {error.details()}")
        began = started if scheduled is None else scheduled
        self.environment.events.request.fire(
            request_type=self.request_type,
            name=self.path,
            response_time=(time.perf_counter() - began) * 1000,
            response_length=length,
            response=None,
            context={},
            exception=exception,
        )

    def on_stop(self) -> None:
        super().on_stop()
        self._channel.close()


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
