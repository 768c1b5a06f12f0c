"""The admission gate against a real server: it refuses only real overload, on this machine's
speed, whatever it is.

- Closed loops of 32, 64 and 128 clients are not an overload: a refusal there is allowed only
  if the answers themselves were past the gate's share of the budget.
- A slow upload neither spends its budget nor takes a place while it arrives; a stalled one
  gets 408 and its connection closed; a client that goes away is counted apart from errors.

Each closed loop prints what it measured, and by how much of the budget the answers overran
the gate's estimate (`digitserve_admission_overrun_ratio`): the margin GATE_SHARE leaves must
cover it.
"""

from __future__ import annotations

import asyncio
import io
import re
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
from PIL import Image

from modelrepo.manifest import ImagePreprocessing
from service.core.admission import GATE_SHARE
from service.core.image import preprocess
from tests.helpers import ROOT, Server, running_server, shares_within
from tests.loadgen import closed_loop, percentile

SEVEN = (ROOT / "examples" / "digits" / "7.png").read_bytes()
BUDGET_MS = 500  # the service's default DIGITSERVE_MAX_LATENCY_MS
BODY_TIMEOUT_S = 1.0
OVERRUN = "digitserve_admission_overrun_ratio"


@pytest.fixture(scope="module")
def gated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("gate") / "server.log"
    env = {
        "DIGITSERVE_MAX_LATENCY_MS": str(BUDGET_MS),
        "DIGITSERVE_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
        "DIGITSERVE_MODELS": "digits-cnn",
    }
    with running_server(log, "--workers", "2", env=env) as srv:
        yield srv


def metric_lines(server: Server, prefix: str) -> list[str]:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return [line for line in text.splitlines() if line.startswith(prefix)]


def counter(server: Server, name: str, **labels: str) -> float:
    """The sum of `name` over every series that has these labels."""
    total = 0.0
    for line in metric_lines(server, name + "{"):
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.parametrize("users", [32, 64, 128])
def test_closed_loops_within_the_budget_are_never_refused(gated: Server, users: int) -> None:
    url = f"{gated.url}/predict"
    refused_before = counter(gated, "digitserve_overload_rejections_total")
    overrun_before = gated.histogram(OVERRUN)
    outcomes = asyncio.run(closed_loop(url, SEVEN, users=users, duration_s=4))
    statuses = Counter(o.status for o in outcomes)
    answered = [o.latency_s * 1000 for o in outcomes if o.status == 200]
    refused = statuses.get(503, 0)
    print(
        f"\n{users} closed-loop clients: {statuses}, {len(outcomes) / 4:.0f} req/s, "
        f"p50 {percentile(answered, 0.5):.1f} ms, p99 {percentile(answered, 0.99):.1f} ms; "
        f"overrun (share of answers within a share of the budget): "
        f"{shares_within(overrun_before, gated.histogram(OVERRUN))}"
    )
    assert set(statuses) <= {200, 503}, statuses
    if refused:  # only a server whose answers really were late may refuse
        assert percentile(answered, 0.5) > BUDGET_MS * GATE_SHARE, (
            f"{refused} refused while the answers took p50 {percentile(answered, 0.5):.0f} ms "
            f"of a {BUDGET_MS} ms budget"
        )
    counted = counter(gated, "digitserve_overload_rejections_total") - refused_before
    assert counted == refused


def test_a_burst_after_a_trickle_is_not_refused(tmp_path: Path) -> None:
    # The gate's figures come from one client sending a request at a time, spaced out: what it
    # learns is a batch of one, and it must not read 128 clients arriving at once as overload
    # unless their answers then really are late.
    env = {"DIGITSERVE_MAX_LATENCY_MS": str(BUDGET_MS), "DIGITSERVE_MODELS": "digits-cnn"}
    with running_server(tmp_path / "server.log", "--workers", "1", env=env) as srv:
        url = f"{srv.url}/predict"
        with httpx.Client(timeout=30) as client:
            for _ in range(100):
                reply = client.post(url, files={"image": ("7.png", SEVEN, "image/png")})
                assert reply.status_code == 200
                time.sleep(0.01)
        outcomes = asyncio.run(closed_loop(url, SEVEN, users=128, duration_s=3))
    statuses = Counter(o.status for o in outcomes)
    answered = [o.latency_s * 1000 for o in outcomes if o.status == 200]
    print(
        f"\n128 clients after a trickle: {statuses}, p50 {percentile(answered, 0.5):.1f} ms, "
        f"p99 {percentile(answered, 0.99):.1f} ms"
    )
    assert set(statuses) <= {200, 503}, statuses
    if statuses.get(503):
        assert percentile(answered, 0.5) > BUDGET_MS * GATE_SHARE, statuses


def raw_request(path: str, body: bytes, content_type: str) -> tuple[bytes, bytes]:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head, body


def multipart_seven() -> tuple[bytes, bytes]:
    boundary = "gate-test"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="7.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + SEVEN
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return raw_request("/predict", body, f"multipart/form-data; boundary={boundary}")


def connect(server: Server, timeout_s: float = 30) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=timeout_s)


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """The status and the whole response (the server closes or sends Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return 0, data  # closed without an answer
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length: *([0-9]+)", head)
    while length and len(body) < int(length[1]):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(head.split(b" ", 2)[1]), head + b"\r\n\r\n" + body


def test_a_slow_upload_is_answered_once_it_has_arrived(gated: Server) -> None:
    # The body trickles in over twice the latency budget, each piece well inside the body
    # timeout: the budget starts when it is all here, so the prediction is answered.
    head, body = multipart_seven()
    pieces = 8
    gap_s = 2 * BUDGET_MS / 1000 / pieces
    assert gap_s < BODY_TIMEOUT_S / 2
    with connect(gated) as sock:
        sock.sendall(head)
        step = len(body) // pieces + 1
        for i in range(0, len(body), step):
            time.sleep(gap_s)
            sock.sendall(body[i : i + step])
        status, response = read_response(sock)
    assert status == 200, response
    assert b'"label":"7"' in response


def test_a_stalled_body_gets_408_and_its_connection_closed(gated: Server) -> None:
    head, body = multipart_seven()
    with connect(gated, timeout_s=BODY_TIMEOUT_S + 20) as sock:
        sock.sendall(head + body[:10])
        started = time.monotonic()
        status, response = read_response(sock)
        waited = time.monotonic() - started
        assert status == 408, response
        assert b"connection: close" in response.lower()
        assert sock.recv(1) == b""  # closed after the answer
    assert waited >= BODY_TIMEOUT_S * 0.9
    assert b"did not arrive in time" in response


def test_stalled_uploads_take_no_place_from_other_requests(gated: Server) -> None:
    # 200 uploads that stop halfway hold connections, not places at the gate: requests sent
    # meanwhile are all answered.
    head, body = multipart_seven()
    stalled = []
    try:
        for _ in range(200):
            sock = connect(gated)
            sock.sendall(head + body[: len(body) // 2])
            stalled.append(sock)
        time.sleep(0.2)
        with httpx.Client(base_url=gated.url, timeout=30) as client:
            statuses = Counter(
                client.post("/predict", files={"image": ("7.png", SEVEN, "image/png")}).status_code
                for _ in range(30)
            )
        assert statuses == {200: 30}, statuses
    finally:
        for sock in stalled:
            sock.close()


def settled(read: Callable[[], float], quiet_s: float = 1.0, limit_s: float = 30) -> float:
    """`read()` once it has stopped changing for `quiet_s` (connections closed by an earlier
    test are still being counted for a moment)."""
    value, deadline = read(), time.monotonic() + limit_s
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        again = read()
        if again == value:
            return value
        value = again
    return value


def test_a_client_that_goes_away_mid_body_is_counted_apart_and_logged_in_one_line(
    gated: Server,
) -> None:
    head, body = multipart_seven()

    def gone() -> float:
        return counter(gated, "digitserve_requests_total", outcome="client_disconnected")

    def logged() -> float:
        return float(gated.log().count("client disconnected"))

    gone_before, logged_before = settled(gone), settled(logged)
    errors_before = counter(gated, "bentoml_service_request_total", http_response_code="500")
    log_start = len(gated.log())
    for _ in range(20):
        with connect(gated) as sock:
            sock.sendall(head + body[: len(body) // 2])
            time.sleep(0.05)
        # closed here, with half the body sent
    assert settled(gone) - gone_before == 20
    assert settled(logged) - logged_before == 20  # one line each
    assert counter(gated, "bentoml_service_request_total", http_response_code="500") == (
        errors_before
    )
    log = gated.log()[log_start:]
    assert "Traceback" not in log and "internal error" not in log
    assert (httpx.get(f"{gated.url}/readyz", timeout=10)).status_code == 200


def sixteen_bit_png(side: int) -> bytes:
    """A side x side 16-bit grey PNG: side^2 pixels to decode from well under a megabyte."""
    values = (np.add.outer(np.arange(side), np.arange(side)) * 7 % 65536).astype(np.uint16)
    out = io.BytesIO()
    Image.fromarray(values).save(out, "PNG", compress_level=1)
    return out.getvalue()


def tree_rss_mb(server: Server) -> float:
    root = psutil.Process(server.process.pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2**20


@pytest.fixture(scope="module")
def unhurried(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with the budget that four 25-megapixel decodes in a row need on any machine."""
    log = tmp_path_factory.mktemp("unhurried") / "server.log"
    env = {"DIGITSERVE_MAX_LATENCY_MS": "60000", "DIGITSERVE_MODELS": "digits-cnn"}
    with running_server(log, "--workers", "2", env=env) as srv:
        yield srv


def test_costly_images_leave_the_event_loop_answering_and_give_memory_back(
    unhurried: Server,
) -> None:
    # Four 25-megapixel 16-bit PNGs at once (the pixel limit). Decoded on the event loop,
    # /livez on that worker waited for all of them; in the decode thread it answers meanwhile.
    # The bound is this machine's own time to decode one such image, measured here, idle and
    # again while the four are uploaded: pinned to one core, that core is shared by both
    # workers' decode threads and this client, which stretches every step (a probe took 254 ms
    # against an idle decode's 220 ms), while a decode on the loop would hold a probe for at
    # least a whole decode under the same load.
    gated = unhurried
    image = sixteen_bit_png(5000)
    spec = ImagePreprocessing(color="L", size=(8, 8), scale=1 / 255, mean=[0.0], std=[1.0])

    def decode_s() -> float:
        started = time.perf_counter()
        preprocess(image, spec, max_bytes=10 * 2**20, max_pixels=25_000_000)
        return time.perf_counter() - started

    idle_decode_s = decode_s()
    rss_before = tree_rss_mb(gated)

    def upload() -> int:
        with httpx.Client(base_url=gated.url, timeout=60) as client:
            files = {"image": ("big.png", image, "image/png")}
            return client.post("/predict", files=files).status_code

    probes: list[float] = []
    with ThreadPoolExecutor(max_workers=5) as pool:
        uploads = [pool.submit(upload) for _ in range(4)]
        loaded_decode = pool.submit(decode_s)
        with httpx.Client(base_url=gated.url, timeout=60) as client:
            while not all(u.done() for u in uploads) and len(probes) < 10_000:
                t = time.perf_counter()
                assert client.get("/livez").status_code == 200
                probes.append(time.perf_counter() - t)
        statuses = [u.result() for u in uploads]
        one_decode_s = max(idle_decode_s, loaded_decode.result())
    rss_after = settled(lambda: round(tree_rss_mb(gated)), quiet_s=0.5)
    print(
        f"\none 25 MP 16-bit decode here: {idle_decode_s * 1000:.0f} ms idle, "
        f"{loaded_decode.result() * 1000:.0f} ms under the uploads; /livez during four: "
        f"max {max(probes) * 1000:.1f} ms over {len(probes)} probes; "
        f"tree RSS {rss_before:.0f} MB before, {rss_after:.0f} MB after"
    )
    assert statuses == [200] * 4
    assert len(probes) >= 4
    assert max(probes) < one_decode_s
    # What the decodes took is handed back (glibc kept it before: 485 MB -> 860 MB, for good).
    assert rss_after < rss_before + 40  # +5 MB seen with the trim, +88 MB without


def test_a_jpeg_with_thousands_of_scans_is_refused_before_decoding(gated: Server) -> None:
    baseline = io.BytesIO()
    Image.new("L", (8, 8), 128).save(baseline, "JPEG")
    data = baseline.getvalue()
    scan = data.index(b"\xff\xda")
    # Thousands of repeats of its one scan: a file no encoder writes, each pass a full decode.
    hostile = data[:scan] + data[scan:-2] * 3000 + data[-2:]
    r = httpx.post(
        f"{gated.url}/predict", files={"image": ("x.jpg", hostile, "image/jpeg")}, timeout=30
    )
    assert r.status_code == 400, r.text
    assert r.json()["detail"]["scans"] == 3000
