"""Protocol-level hardening: a corpus of hostile HTTP/1.1 traffic over raw loopback sockets (and
asyncio streams) against a real two-worker server with short header and body timeouts.

The corpus covers slow and silent clients, broken message framing (Content-Length,
Transfer-Encoding, chunked encoding), oversized and malformed request lines and headers,
pipelining, hostile multipart bodies, image-metadata bombs, hostile JSON, inconsistent Open
Inference Protocol tensors, and thousands of concurrent and idle connections. Every case must
end with a 4xx answer or with the server closing the connection, within the server's
configured timeout plus a generous margin; a 200 is allowed only where the request is actually
valid, and each row says which. Nothing may get a 5xx. Afterwards the server is still ready,
with the same processes, no traceback in its log, and a process-tree RSS that did not grow
past a generous bound.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import random
import re
import resource
import select
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
from PIL import Image

from tests.helpers import ROOT, Server, running_server

HOST = "127.0.0.1"  # every byte this module sends goes to the loopback server it started
HEADER_TIMEOUT_S = 2.0  # DIGITSERVE_HEADER_TIMEOUT_S of the server under test
BODY_TIMEOUT_S = 2.0  # DIGITSERVE_BODY_TIMEOUT_S
MARGIN_S = 8.0  # generous: how long past its timeout a server may take to act on it
WAIT_S = max(HEADER_TIMEOUT_S, BODY_TIMEOUT_S) + MARGIN_S  # the bound on any one answer
UPLOAD_LIMIT = 10 * 1024 * 1024  # DIGITSERVE_MAX_UPLOAD_BYTES (default)
HEADER_LIMIT = 16 * 1024  # DIGITSERVE_MAX_HEADER_BYTES (default)
RSS_GROWTH_LIMIT = 300 * 1024 * 1024
WORKERS = 2

SEVEN = (ROOT / "examples" / "digits" / "7.png").read_bytes()

CLOSED = 0  # the outcome "the server closed the connection without an answer"
REFUSED = frozenset(range(400, 500)) | {CLOSED}  # any 4xx, or a close
OK = frozenset({200})
OK_OR_REFUSED = OK | REFUSED  # an odd but valid request: served, or refused; never a 5xx

pytestmark = pytest.mark.timeout(180)


# ---------------------------------------------------------------------------------------------
# Raw HTTP: what is sent, and a minimal reader of what comes back


@dataclass(frozen=True)
class Pause:
    """Stop writing for this long (or until the case is over)."""

    seconds: float


@dataclass(frozen=True)
class HalfClose:
    """Shut the write side: the server reads end-of-file."""


Write = bytes | Pause | HalfClose


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


class NoAnswer(AssertionError):
    """The server neither answered nor closed the connection in time."""


class Connection:
    """A blocking loopback socket and a buffer of what it received."""

    def __init__(self, port: int, timeout: float = WAIT_S) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.buffer = bytearray()
        self.eof = False
        self.reset = False

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes a sender blocked in sendall
        self.sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, deadline: float) -> bool:
        """Read what arrives before `deadline`; False at end-of-file (or a reset)."""
        if self.eof:
            return False
        remaining = deadline - time.monotonic()
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        if remaining <= 0 or not poller.poll(remaining * 1000):
            raise NoAnswer(f"no answer and no close within {WAIT_S:g} s")
        try:
            data = self.sock.recv(256 * 1024)
        except ConnectionResetError:
            data, self.reset = b"", True
        if not data:
            self.eof = True
            return False
        self.buffer += data
        return True

    def _take(self, n: int, deadline: float) -> bytes:
        while len(self.buffer) < n:
            if not self._fill(deadline):
                raise AssertionError(f"response truncated: {bytes(self.buffer[:200])!r}")
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    def _line(self, deadline: float) -> bytes:
        while b"\r\n" not in self.buffer:
            if not self._fill(deadline):
                raise AssertionError(f"response truncated: {bytes(self.buffer[:200])!r}")
        line, _, rest = bytes(self.buffer).partition(b"\r\n")
        self.buffer[:] = rest
        return line

    def response(self, timeout: float = WAIT_S) -> Response | None:
        """The next response, or None when the server closed the connection before one."""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buffer:
            if not self._fill(deadline):
                if self.buffer:
                    raise AssertionError(f"response truncated: {bytes(self.buffer[:200])!r}")
                return None
        head, _, rest = bytes(self.buffer).partition(b"\r\n\r\n")
        self.buffer[:] = rest
        status_line, *lines = head.decode("latin-1").split("\r\n")
        match = re.fullmatch(r"HTTP/1\.[01] (\d{3})(?: .*)?", status_line)
        assert match, f"not an HTTP/1.x status line: {status_line[:200]!r}"
        headers: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        status = int(match[1])
        if 100 <= status < 200 or status in (204, 304):
            return Response(status, headers, b"")
        if "chunked" in headers.get("transfer-encoding", "").lower():
            chunks = []
            while size := int(self._line(deadline).split(b";")[0], 16):
                chunks.append(self._take(size, deadline))
                self._take(2, deadline)
            while self._line(deadline):  # trailers, up to the empty line
                pass
            return Response(status, headers, b"".join(chunks))
        if "content-length" in headers:
            return Response(status, headers, self._take(int(headers["content-length"]), deadline))
        while self._fill(deadline):  # no length: the body runs to the close
            pass
        body = bytes(self.buffer)
        self.buffer.clear()
        return Response(status, headers, body)

    def closed_by_server(self, timeout: float = WAIT_S) -> bool:
        """Whether the server closes the connection within `timeout` (bytes received meanwhile
        are kept in the buffer)."""
        deadline = time.monotonic() + timeout
        try:
            while self._fill(deadline):
                pass
        except NoAnswer:
            return False
        return True


def outcome(response: Response | None) -> int:
    return CLOSED if response is None else response.status


def describe(response: Response | None) -> str:
    if response is None:
        return "closed without an answer"
    return f"{response.status} {response.body[:300]!r}"


def write_all(conn: Connection, writes: Sequence[Write], stop: threading.Event) -> None:
    """The sender of a case, in a thread of its own: stops at the first write the server no
    longer takes (it closed, or stopped reading), since its answer tells the rest."""
    try:
        for write in writes:
            if stop.is_set():
                return
            if isinstance(write, Pause):
                stop.wait(write.seconds)
            elif isinstance(write, HalfClose):
                conn.sock.shutdown(socket.SHUT_WR)
            else:
                conn.send(write)
    except OSError:
        pass


def exchange(port: int, writes: Sequence[Write]) -> Response | None:
    """Send `writes` (while reading) and return the first final response, or None for a close.
    Interim 1xx answers are returned too: a case that gets one decides what it means."""
    with Connection(port) as conn:
        stop = threading.Event()
        sender = threading.Thread(target=write_all, args=(conn, writes, stop), daemon=True)
        sender.start()
        try:
            return conn.response()
        finally:
            stop.set()
            conn.close()
            sender.join(WAIT_S)


def request(
    method: bytes,
    path: bytes,
    headers: Sequence[bytes] = (),
    body: bytes = b"",
    *,
    version: bytes = b"HTTP/1.1",
    host: bool = True,
    length: bool = True,
) -> bytes:
    """A raw request: Host and (for a body or a POST) Content-Length unless told otherwise."""
    lines = [method + b" " + path + b" " + version]
    if host:
        lines.append(b"Host: 127.0.0.1")
    lines.extend(headers)
    if length and (body or method == b"POST"):
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def get(path: bytes, *headers: bytes) -> bytes:
    return request(b"GET", path, headers)


def post_json(path: bytes, body: bytes, *headers: bytes) -> bytes:
    return request(b"POST", path, [b"Content-Type: application/json", *headers], body)


def chunked(*chunks: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"


# ---------------------------------------------------------------------------------------------
# Multipart bodies, by hand

BOUNDARY = b"protocol-hardening-boundary"
FORM = b"Content-Type: multipart/form-data; boundary=" + BOUNDARY


def part(headers: Sequence[bytes], data: bytes) -> bytes:
    return b"\r\n".join(headers) + b"\r\n\r\n" + data


def image_part(
    data: bytes,
    *,
    name: bytes = b"image",
    filename: bytes = b"digit.png",
    extra: Sequence[bytes] = (),
) -> bytes:
    disposition = b'Content-Disposition: form-data; name="%s"; filename="%s"' % (name, filename)
    return part([disposition, b"Content-Type: image/png", *extra], data)


def field_part(name: bytes, value: bytes) -> bytes:
    return part([b'Content-Disposition: form-data; name="%s"' % name], value)


def multipart(*parts: bytes, boundary: bytes = BOUNDARY, closed: bool = True) -> bytes:
    body = b"".join(b"--" + boundary + b"\r\n" + p + b"\r\n" for p in parts)
    return body + (b"--" + boundary + b"--\r\n" if closed else b"")


def post_form(path: bytes, body: bytes, content_type: bytes = FORM) -> bytes:
    return request(b"POST", path, [content_type], body)


def predict(image: bytes) -> bytes:
    return post_form(b"/predict", multipart(image_part(image)))


PREDICT_SEVEN = predict(SEVEN)
LIVEZ = get(b"/livez")


# ---------------------------------------------------------------------------------------------
# Images, built in memory


def png_chunk(kind: bytes, data: bytes, *, crc: int | None = None) -> bytes:
    check = zlib.crc32(kind + data) if crc is None else crc
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", check)


with Image.open(io.BytesIO(SEVEN)) as _seven:
    SEVEN_PIXELS = _seven.convert("L").tobytes()  # 8 x 8 grey


def grey_png(
    width: int = 8,
    height: int = 8,
    pixels: bytes = SEVEN_PIXELS,
    *,
    before_idat: Sequence[bytes] = (),
    after_idat: Sequence[bytes] = (),
    idat: bytes | None = None,
    ihdr_crc: int | None = None,
    idat_crc: int | None = None,
) -> bytes:
    """An 8-bit grey PNG (the bundled 7 unless told otherwise), with extra chunks around its
    IDAT and, where given, a wrong CRC."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = b"".join(b"\x00" + pixels[y * width : (y + 1) * width] for y in range(height))
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            png_chunk(b"IHDR", ihdr, crc=ihdr_crc),
            *before_idat,
            png_chunk(b"IDAT", zlib.compress(rows) if idat is None else idat, crc=idat_crc),
            *after_idat,
            png_chunk(b"IEND", b""),
        ]
    )


def deflated_zeros(size: int) -> bytes:
    """`size` zero bytes, zlib-compressed, without ever holding them: about size / 1000."""
    compressor = zlib.compressobj(9)
    block = bytes(1024 * 1024)
    out = [
        compressor.compress(block[: min(len(block), size - done)])
        for done in range(0, size, len(block))
    ]
    return b"".join(out) + compressor.flush()


BOMB = deflated_zeros(128 * 1024 * 1024)  # 128 MiB of zeros in ~128 KB
NEAR_MEBIBYTE = deflated_zeros(1_000_000)  # just under Pillow's 1 MiB limit per text chunk

ZTXT_BOMB = grey_png(before_idat=[png_chunk(b"zTXt", b"Comment\x00\x00" + BOMB)])
ITXT_BOMB = grey_png(before_idat=[png_chunk(b"iTXt", b"Comment\x00\x01\x00en\x00\x00" + BOMB)])
ICCP_BOMB = grey_png(before_idat=[png_chunk(b"iCCP", b"icc\x00\x00" + BOMB)])
ZTXT_BOMB_AFTER_IDAT = grey_png(after_idat=[png_chunk(b"zTXt", b"Comment\x00\x00" + BOMB)])
MANY_ZTXT = grey_png(
    before_idat=[png_chunk(b"zTXt", b"k%d\x00\x00" % i + NEAR_MEBIBYTE) for i in range(150)]
)
# Rows that decompress far past the 8 x 8 pixels the header declares.
IDAT_BOMB = grey_png(
    idat=deflated_zeros(128 * 1024 * 1024)  # the filter byte of every row is 0: valid rows
)
BAD_IHDR_CRC = grey_png(ihdr_crc=0x12345678)
BAD_IDAT_CRC = grey_png(idat_crc=0x12345678)
ZERO_BY_ZERO = grey_png(0, 0, b"")
ONE_BY_ONE = grey_png(1, 1, b"\x80")
TRUNCATED_IDAT = grey_png()[:45]


def gif_with_frames(count: int) -> bytes:
    """The 7 as a GIF whose single frame is repeated `count` times."""
    buffer = io.BytesIO()
    with Image.open(io.BytesIO(SEVEN)) as image:
        image.convert("P").save(buffer, format="GIF")
    one = buffer.getvalue()
    flags = one[10]
    table = 3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0
    assert one.endswith(b";")
    return one[: 13 + table] + one[13 + table : -1] * count + b";"


MANY_FRAMES_GIF = gif_with_frames(5000)


def b64_json(image: bytes) -> bytes:
    return json.dumps({"image_base64": base64.b64encode(image).decode()}).encode()


# ---------------------------------------------------------------------------------------------
# JSON and Open Inference Protocol bodies

V2_INFER = b"/v2/models/digits-cnn/infer"
V2_TEXT = b"/v2/models/text-topics/infer"
PIXELS = [0.5] * 64  # one 1 x 8 x 8 image


def tensor(
    shape: object = (1, 1, 8, 8),
    data: object = PIXELS,
    datatype: str = "FP32",
    name: str = "input",
) -> bytes:
    shape = list(shape) if isinstance(shape, tuple) else shape
    one = {"name": name, "shape": shape, "datatype": datatype, "data": data}
    return json.dumps({"inputs": [one]}).encode()


def tensor_raw(shape: bytes = b"[1, 1, 8, 8]", data: bytes = b"[]") -> bytes:
    """A V2 body with its shape and data spliced in as raw JSON text."""
    template = b'{"inputs": [{"name": "input", "shape": %s, "datatype": "FP32", "data": %s}]}'
    return template % (shape, data)


DEEP = 100_000
DEEP_ARRAYS = b"[" * DEEP + b"]" * DEEP
DEEP_OBJECTS = b'{"a":' * DEEP + b"1" + b"}" * DEEP
HUGE_INTEGER = b"9" * 100_000
SEVEN_JSON = b64_json(SEVEN)


# ---------------------------------------------------------------------------------------------
# The corpus


@dataclass(frozen=True)
class Case:
    id: str
    writes: tuple[Write, ...]
    allowed: frozenset[int]
    why: str = ""


def case(id: str, *writes: Write, allowed: frozenset[int] = REFUSED, why: str = "") -> Case:
    return Case(id, writes, allowed, why)


STALL = Pause(WAIT_S + 5)  # longer than the server may take: it must act first
OVER_LIMIT_CHUNK = b"%x\r\n%s\r\n" % (64 * 1024, b"A" * 64 * 1024)
OVER_LIMIT_CHUNKS = (UPLOAD_LIMIT + UPLOAD_LIMIT // 10) // (64 * 1024)
FORM_HEAD = (
    b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="image"; filename="x"\r\n\r\n'
)

FRAMING = [
    case("post-no-length-no-body", request(b"POST", b"/predict", [FORM], length=False),
         why="no Content-Length, no body: an empty form"),
    case("post-json-body-without-length",
         request(b"POST", b"/predict/json", [b"Content-Type: application/json"], length=False)
         + SEVEN_JSON,
         why="the body is read as the next request: garbage"),
    case("content-length-negative", post_json(b"/predict/json", b"", b"Content-Length: -1")),
    case("content-length-non-numeric",
         request(b"POST", b"/predict/json", [b"Content-Length: abc"], b"{}", length=False)),
    case("content-length-hex",
         request(b"POST", b"/predict/json", [b"Content-Length: 0x2"], b"{}", length=False)),
    case("content-length-plus-sign",
         request(b"POST", b"/predict/json", [b"Content-Length: +2"], b"{}", length=False)),
    case("content-length-duplicated-different",
         request(b"POST", b"/predict/json", [b"Content-Type: application/json",
                 b"Content-Length: 2", b"Content-Length: 3"], b"{} ", length=False)),
    case("content-length-list",
         request(b"POST", b"/predict/json", [b"Content-Length: 2, 3"], b"{} ", length=False)),
    case("content-length-overflows-64-bits",
         request(b"POST", b"/predict/json", [b"Content-Length: 99999999999999999999999"],
                 b"{}", length=False)),
    case("content-length-longer-then-stall-predict",
         request(b"POST", b"/predict", [FORM, b"Content-Length: 4096"], length=False)
         + FORM_HEAD, STALL, why="408 after the body timeout, or a close"),
    case("content-length-longer-then-stall-json",
         request(b"POST", b"/predict/json", [b"Content-Type: application/json",
                 b"Content-Length: 4096"], length=False) + b'{"image_base64": "', STALL),
    case("content-length-longer-then-stall-text",
         request(b"POST", b"/predict/text", [b"Content-Type: application/json",
                 b"Content-Length: 4096"], length=False) + b'{"text": "', STALL),
    case("content-length-longer-then-stall-v2",
         request(b"POST", V2_INFER, [b"Content-Type: application/json",
                 b"Content-Length: 4096"], length=False) + b'{"inputs": [', STALL),
    case("content-length-no-body-byte-then-stall-predict",
         request(b"POST", b"/predict", [FORM, b"Content-Length: 4096"], length=False), STALL,
         why="headers only, not one body byte: 408 after the body timeout, or a close"),
    case("content-length-no-body-byte-then-stall-json",
         request(b"POST", b"/predict/json", [b"Content-Type: application/json",
                 b"Content-Length: 4096"], length=False), STALL),
    case("content-length-no-body-byte-then-stall-v2",
         request(b"POST", V2_INFER, [b"Content-Type: application/json",
                 b"Content-Length: 4096"], length=False), STALL),
    case("content-length-longer-then-half-close",
         request(b"POST", b"/predict", [FORM, b"Content-Length: 4096"], length=False)
         + FORM_HEAD, HalfClose(), STALL),
    case("content-length-over-limit-body-unsent",
         request(b"POST", b"/predict", [FORM, b"Content-Length: %d" % (UPLOAD_LIMIT + 1)],
                 length=False), STALL,
         allowed=frozenset({413, CLOSED}), why="413 on the declared length"),
    case("expect-100-continue-over-limit",
         request(b"POST", b"/predict", [FORM, b"Expect: 100-continue",
                 b"Content-Length: %d" % (UPLOAD_LIMIT * 2)], length=False), STALL,
         allowed=frozenset({413}), why="413 at once, never a 100 asking for the body"),
    case("transfer-encoding-and-content-length",
         request(b"POST", b"/predict/json", [b"Content-Type: application/json",
                 b"Transfer-Encoding: chunked", b"Content-Length: 5"],
                 chunked(SEVEN_JSON), length=False),
         why="RFC 9112 6.3: a request with both is a smuggling attempt"),
    case("transfer-encoding-chunked-not-last",
         request(b"POST", b"/predict/json", [b"Content-Type: application/json",
                 b"Transfer-Encoding: chunked, gzip"], chunked(SEVEN_JSON), length=False),
         why="RFC 9112 6.3: chunked must be the final coding of a request, else 400"),
    case("transfer-encoding-space-before-colon",
         request(b"POST", b"/predict/json", [b"Content-Type: application/json",
                 b"Transfer-Encoding : chunked"], chunked(SEVEN_JSON), length=False)),
    case("chunked-bad-hex-size",  # the parse error comes before any body byte
         request(b"POST", b"/predict/json", [b"Content-Type: application/json",
                 b"Transfer-Encoding: chunked"], b"zz\r\n{}\r\n0\r\n\r\n", length=False)),
    case("chunked-missing-crlf",
         request(b"POST", b"/predict/json", [b"Content-Type: application/json",
                 b"Transfer-Encoding: chunked"], b"2\r\n{}XX0\r\n\r\n", length=False)),
    case("chunked-size-overflow",
         request(b"POST", b"/predict/json", [b"Content-Type: application/json",
                 b"Transfer-Encoding: chunked"], b"fffffffffffffffffffff\r\n{}\r\n",
                 length=False), STALL),
    case("chunked-negative-size",
         request(b"POST", b"/predict/json", [b"Content-Type: application/json",
                 b"Transfer-Encoding: chunked"], b"-2\r\n{}\r\n0\r\n\r\n", length=False)),
    case("chunked-over-limit-streamed",
         request(b"POST", b"/predict", [FORM, b"Transfer-Encoding: chunked"], length=False)
         + b"%x\r\n%s\r\n" % (len(FORM_HEAD), FORM_HEAD),
         *[OVER_LIMIT_CHUNK] * OVER_LIMIT_CHUNKS, b"0\r\n\r\n",
         allowed=frozenset({413, CLOSED}), why="11 MiB in chunks, no length: 413 or a close"),
]  # fmt: skip

MANY_HEADERS = [b"X-Header-%04d: value-value" % i for i in range(1000)]
SMALL_HEADERS = [b"X-%d: v" % i for i in range(1000)]

REQUEST_LINE_AND_HEADERS = [
    case("request-line-100kb", get(b"/livez?" + b"a" * 100_000)),
    case("headers-1000-over-limit", get(b"/livez", *MANY_HEADERS),
         why="about 27 KB of headers: 431 past the 16 KiB limit"),
    case("headers-1000-small-under-limit", get(b"/livez", *SMALL_HEADERS), allowed=OK_OR_REFUSED,
         why="1,000 headers in under 16 KiB: a valid request"),
    case("header-value-64kb", get(b"/livez", b"X-Big: " + b"a" * 64 * 1024)),
    case("header-name-64kb", get(b"/livez", b"X-" + b"a" * 64 * 1024 + b": 1")),
    case("header-value-bare-cr", get(b"/livez", b"X-Injected: a\rSet-Cookie: b"),
         why="RFC 9112 2.2: a bare CR must be rejected (or replaced by SP)", allowed=OK_OR_REFUSED),
    case("header-value-nul", get(b"/livez", b"X-Injected: a\x00b")),
    case("header-value-crlf-crlf-smuggle",
         get(b"/livez", b"X-A: 1\r\n\r\nGARBAGE /x HTTP/1.1"),
         why="the injected text is a second, malformed request: 400 after the 200",
         allowed=OK_OR_REFUSED),
    case("header-without-colon", get(b"/livez", b"NoColonHere")),
    case("header-space-before-colon", get(b"/livez", b"X-Forwarded-For : 10.0.0.1"),
         why="RFC 9112 5.1: MUST be rejected with 400"),
    case("header-obs-fold", get(b"/livez", b"X-Folded: a", b"  continued"),
         allowed=OK_OR_REFUSED, why="RFC 9112 5.2: reject, or replace the fold with SP"),
    case("crlf-in-path", b"GET /livez\r\nX-Injected: 1 HTTP/1.1\r\nHost: x\r\n\r\n",
         why="a request line without an HTTP version (RFC 9112 3): the rest must not be headers"),
    case("space-in-path", get(b"/li vez")),
    case("encoded-crlf-in-path", get(b"/models%0D%0ASet-Cookie:%20x=1")),
    case("nul-in-path", get(b"/livez\x00.json")),
    case("http10-without-host", request(b"GET", b"/livez", version=b"HTTP/1.0", host=False),
         allowed=OK, why="valid in HTTP/1.0"),
    case("http11-without-host", request(b"GET", b"/livez", host=False),
         why="RFC 9112 3.2: MUST be answered 400"),
    case("http11-two-hosts", get(b"/livez", b"Host: 127.0.0.2"),
         why="RFC 9112 3.2: MUST be answered 400"),
    case("http-version-9.9", get(b"/livez").replace(b"HTTP/1.1", b"HTTP/9.9", 1)),
    case("http-version-2.0-text", get(b"/livez").replace(b"HTTP/1.1", b"HTTP/2.0", 1),
         why="HTTP/2.0 is not an HTTP/1.x message: refuse, not answer as HTTP/1.1"),
    case("http-version-garbage", get(b"/livez").replace(b"HTTP/1.1", b"HTXP/1.1", 1)),
    case("http-0.9-request", b"GET /livez\r\n", STALL, why="no version: 400, 408 or a close"),
    case("method-foo", request(b"FOO", b"/livez")),
    case("method-brew", request(b"BREW", b"/livez")),
    case("method-lowercase", request(b"get", b"/livez")),
    case("method-10kb", request(b"X" * 10_000, b"/livez")),
    case("method-connect", request(b"CONNECT", b"127.0.0.1:80")),
    case("absolute-form-target", get(b"http://127.0.0.1/livez"), allowed=OK_OR_REFUSED,
         why="RFC 9112 3.2.2: a server must accept the absolute form"),
    case("asterisk-form-options", request(b"OPTIONS", b"*"),
         allowed=OK_OR_REFUSED | {204}, why="OPTIONS * is valid"),
    case("empty-lines-then-stall", b"\r\n\r\n\r\n", STALL),
    case("partial-request-line-then-stall", b"GET /liv", STALL),
    case("binary-garbage", random.Random(7).randbytes(4096)),
    case("tls-client-hello", bytes.fromhex("16030100a5010000a10303") + bytes(160)),
    case("http2-prior-knowledge", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes(64)),
    case("websocket-upgrade",
         get(b"/livez", b"Connection: Upgrade", b"Upgrade: websocket",
             b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="),
         allowed=OK_OR_REFUSED, why="no websocket route: ignored (200) or refused"),
    case("h2c-upgrade",
         get(b"/livez", b"Connection: Upgrade, HTTP2-Settings", b"Upgrade: h2c",
             b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"),
         allowed=OK_OR_REFUSED, why="an upgrade the server may ignore"),
]  # fmt: skip

SEVEN_PART = image_part(SEVEN)
INNER = b"inner-boundary"
NESTED = multipart(
    part(
        [b'Content-Disposition: form-data; name="image"; filename="x"',
         b"Content-Type: multipart/mixed; boundary=" + INNER],
        multipart(image_part(SEVEN), boundary=INNER),
    )
)  # fmt: skip

MULTIPART = [
    case("multipart-5000-fields",
         post_form(b"/predict", multipart(SEVEN_PART, *[field_part(b"f", b"1")] * 5000))),
    case("multipart-5000-files-batch",
         post_form(b"/predict/batch", multipart(*[image_part(SEVEN, name=b"images")] * 5000))),
    case("multipart-missing-closing-boundary",
         post_form(b"/predict", multipart(SEVEN_PART, closed=False))),
    case("multipart-empty-boundary",
         post_form(b"/predict", multipart(SEVEN_PART, boundary=b""),
                   b"Content-Type: multipart/form-data; boundary="),
         allowed=frozenset({400}), why="must be 400"),
    case("multipart-no-boundary",
         post_form(b"/predict", multipart(SEVEN_PART), b"Content-Type: multipart/form-data")),
    case("multipart-boundary-10kb",
         post_form(b"/predict", multipart(SEVEN_PART, boundary=b"b" * 10_000),
                   b"Content-Type: multipart/form-data; boundary=" + b"b" * 10_000)),
    case("multipart-boundary-mismatch",
         post_form(b"/predict", multipart(SEVEN_PART, boundary=b"other-boundary"))),
    case("multipart-part-header-64kb",
         post_form(b"/predict", multipart(image_part(SEVEN, extra=[b"X-Junk: " + b"j" * 65536]))),
         allowed=OK_OR_REFUSED, why="a valid form with one huge part header"),
    case("multipart-1000-part-headers",
         post_form(b"/predict", multipart(image_part(SEVEN, extra=SMALL_HEADERS))),
         allowed=OK_OR_REFUSED, why="a valid form with 1,000 part headers"),
    case("multipart-nested-mixed", post_form(b"/predict", NESTED),
         why="the image part holds a multipart/mixed body, not an image"),
    case("multipart-part-without-disposition",
         post_form(b"/predict", multipart(part([b"Content-Type: image/png"], SEVEN)))),
    case("multipart-only-garbage", post_form(b"/predict", random.Random(8).randbytes(4096))),
    case("filename-path-traversal",
         post_form(b"/predict/batch", multipart(
             image_part(SEVEN, name=b"images", filename=b"../../../../etc/passwd")
         )), allowed=OK, why="a valid image; the name is only echoed"),
    case("filename-nul",
         post_form(b"/predict/batch", multipart(
             image_part(SEVEN, name=b"images", filename=b"seven\x00.png")
         )), allowed=OK_OR_REFUSED, why="a valid image with a NUL in its name"),
    case("filename-10kb",
         post_form(b"/predict/batch", multipart(
             image_part(SEVEN, name=b"images", filename=b"n" * 10_000)
         )), allowed=OK_OR_REFUSED, why="a valid image with a 10 KB name"),
    case("filename-not-utf8",
         post_form(b"/predict/batch", multipart(
             image_part(SEVEN, name=b"images", filename=b"\xff\xfe\xc3(\x80.png")
         )), allowed=OK_OR_REFUSED, why="a valid image whose name is not UTF-8"),
    case("field-name-not-utf8",
         post_form(b"/predict", multipart(SEVEN_PART, field_part(b"\xff\xfe", b"1"))),
         allowed=OK_OR_REFUSED, why="an extra field, ignored or refused"),
]  # fmt: skip

IMAGES = [
    case("png-ztxt-bomb", predict(ZTXT_BOMB), allowed=OK_OR_REFUSED,
         why="a valid 8x8 PNG with 128 MiB of compressed text"),
    case("png-itxt-bomb", predict(ITXT_BOMB), allowed=OK_OR_REFUSED,
         why="a valid 8x8 PNG with 128 MiB of compressed international text"),
    case("png-iccp-bomb", predict(ICCP_BOMB), allowed=OK_OR_REFUSED,
         why="a valid 8x8 PNG with a 128 MiB compressed ICC profile"),
    case("png-ztxt-bomb-after-idat", predict(ZTXT_BOMB_AFTER_IDAT), allowed=OK_OR_REFUSED,
         why="the text chunk is read when the pixels are"),
    case("png-150-ztxt-chunks", predict(MANY_ZTXT), allowed=OK_OR_REFUSED,
         why="150 text chunks of 1 MB each: 150 MB of text in all"),
    case("png-idat-bomb", predict(IDAT_BOMB), allowed=OK_OR_REFUSED,
         why="8x8 declared, 128 MiB of rows compressed"),
    case("png-idat-bomb-json", post_json(b"/predict/json", b64_json(IDAT_BOMB)),
         allowed=OK_OR_REFUSED, why="the same, base64 in JSON"),
    case("gif-5000-frames", predict(MANY_FRAMES_GIF), allowed=OK_OR_REFUSED,
         why="a valid animation: its first frame is classified"),
    case("png-bad-ihdr-crc", predict(BAD_IHDR_CRC), why="a critical chunk with a wrong CRC"),
    case("png-bad-idat-crc", predict(BAD_IDAT_CRC), why="a critical chunk with a wrong CRC"),
    case("png-0x0", predict(ZERO_BY_ZERO)),
    case("png-1x1", predict(ONE_BY_ONE), allowed=frozenset({422}),
         why="a valid image with no digit in it: the default mnist-cnn answers 422 no_ink"),
    case("png-truncated", predict(TRUNCATED_IDAT)),
]  # fmt: skip

JSON_BODIES = [
    case("json-nested-100k-arrays", post_json(b"/predict/json", DEEP_ARRAYS)),
    case("json-nested-100k-objects", post_json(b"/predict/json", DEEP_OBJECTS)),
    case("json-nested-100k-in-field",
         post_json(b"/predict/json", b'{"image_base64": ' + DEEP_ARRAYS + b"}")),
    case("json-nested-100k-text", post_json(b"/predict/text", DEEP_OBJECTS)),
    case("json-nan-literal", post_json(b"/predict/json", b'{"image_base64": NaN}')),
    case("json-infinity-top-k",
         post_json(b"/predict/json", SEVEN_JSON[:-1] + b', "top_k": Infinity}')),
    case("json-1e999999-top-k",
         post_json(b"/predict/json", SEVEN_JSON[:-1] + b', "top_k": 1e999999}')),
    case("json-100k-digit-top-k",
         post_json(b"/predict/json", SEVEN_JSON[:-1] + b', "top_k": ' + HUGE_INTEGER + b"}")),
    case("json-utf16", post_json(b"/predict/json", SEVEN_JSON.decode().encode("utf-16")),
         allowed=OK_OR_REFUSED, why="RFC 8259 wants UTF-8; decoding UTF-16 anyway is lenient"),
    case("json-utf8-bom", post_json(b"/predict/json", b"\xef\xbb\xbf" + SEVEN_JSON),
         allowed=OK_OR_REFUSED, why="RFC 8259: a parser may ignore a BOM"),
    case("json-invalid-utf8", post_json(b"/predict/text", b'{"text": "\xff\xfe\xc3("}')),
    case("json-lone-surrogate", post_json(b"/predict/text", b'{"text": "a\\ud800b"}'),
         allowed=OK_OR_REFUSED, why="valid JSON; an unpaired surrogate is not valid text"),
    case("json-text-5mb", post_json(b"/predict/text", json.dumps({"text": "ab " * 1_700_000})
                                     .encode()),
         allowed=OK_OR_REFUSED, why="a valid but huge text"),
    case("json-trailing-garbage", post_json(b"/predict/json", SEVEN_JSON + b"}}]]")),
    case("v2-nested-100k", post_json(V2_INFER, tensor_raw(data=DEEP_ARRAYS))),
    case("v2-nested-100k-objects", post_json(V2_INFER, DEEP_OBJECTS)),
    case("v2-nan-infinity",
         post_json(V2_INFER, tensor_raw(data=b"[NaN, Infinity, -Infinity" + b", 0" * 61 + b"]"))),
    case("v2-1e999999", post_json(V2_INFER, tensor_raw(data=b"[1e999999" + b", 0" * 63 + b"]"))),
    case("v2-100k-digit-integer",
         post_json(V2_INFER, tensor_raw(data=b"[" + HUGE_INTEGER + b", 0" * 63 + b"]"))),
    case("v2-100k-digit-shape",
         post_json(V2_INFER, tensor_raw(shape=b"[" + HUGE_INTEGER + b", 1, 8, 8]"))),
    case("v2-utf16", post_json(V2_INFER, tensor().decode().encode("utf-16")),
         allowed=OK_OR_REFUSED, why="RFC 8259 wants UTF-8; decoding UTF-16 anyway is lenient"),
    case("v2-utf8-bom", post_json(V2_INFER, b"\xef\xbb\xbf" + tensor()),
         allowed=OK_OR_REFUSED, why="RFC 8259: a parser may ignore a BOM"),
]  # fmt: skip

V2_TENSORS = [
    case("v2-control-valid", post_json(V2_INFER, tensor()), allowed=OK, why="a valid request"),
    case("v2-shape-data-disagree", post_json(V2_INFER, tensor(data=PIXELS[:10]))),
    case("v2-shape-data-disagree-more", post_json(V2_INFER, tensor(data=PIXELS * 3))),
    case("v2-negative-dims", post_json(V2_INFER, tensor(shape=(-1, 1, 8, 8)))),
    case("v2-negative-inner-dims", post_json(V2_INFER, tensor(shape=(1, -1, -8, 8)))),
    case("v2-zero-dims", post_json(V2_INFER, tensor(shape=(0, 1, 8, 8), data=[]))),
    case("v2-dims-2-63", post_json(V2_INFER, tensor(shape=(2**63, 1, 8, 8)))),
    case("v2-dims-2-64", post_json(V2_INFER, tensor(shape=(2**64 + 1, 1, 8, 8)))),
    case("v2-inner-dims-2-63", post_json(V2_INFER, tensor(shape=(1, 1, 2**63, 2**63)))),
    case("v2-millions-claimed", post_json(V2_INFER, tensor(shape=(4_000_000, 1, 8, 8)))),
    case("v2-10000-dims", post_json(V2_INFER, tensor(shape=[1] * 10_000))),
    case("v2-datatype-fp128", post_json(V2_INFER, tensor(datatype="FP128"))),
    case("v2-datatype-bytes",
         post_json(V2_INFER, tensor(datatype="BYTES", data=["aGVsbG8="] * 64))),
    case("v2-data-strings", post_json(V2_INFER, tensor(data=["0.5"] * 64))),
    case("v2-data-booleans", post_json(V2_INFER, tensor(data=[True] * 64))),
    case("v2-data-ragged", post_json(V2_INFER, tensor(data=[[0.5] * 8] * 7 + [[0.5] * 9]))),
    case("v2-data-objects", post_json(V2_INFER, tensor(data=[{"a": 1}] * 64))),
    case("v2-shape-string", post_json(V2_INFER, tensor(shape="1,1,8,8"))),
    case("v2-no-inputs", post_json(V2_INFER, b'{"inputs": []}')),
    case("v2-two-inputs",
         post_json(V2_INFER, b'{"inputs": [%s, %s]}' % (
             json.dumps(json.loads(tensor())["inputs"][0]).encode(),
             json.dumps(json.loads(tensor())["inputs"][0]).encode())),
    ),
    case("v2-wrong-input-name", post_json(V2_INFER, tensor(name="x" * 10_000))),
    case("v2-text-fp32", post_json(V2_TEXT, tensor(shape=(1, 32), data=[0.5] * 32))),
    case("v2-text-ids-out-of-range",
         post_json(V2_TEXT, tensor(shape=(1, 32), datatype="INT64", data=[2**62] * 32))),
    case("v2-text-ids-over-int64",
         post_json(V2_TEXT, tensor(shape=(1, 32), datatype="INT64", data=[2**64] * 32))),
    case("v2-unknown-model", post_json(b"/v2/models/" + b"m" * 5000 + b"/infer", tensor())),
    case("v2-version-not-a-number",
         post_json(b"/v2/models/digits-cnn/versions/1e9999/infer", tensor())),
    case("v2-binary-extension",
         post_json(V2_INFER, tensor(), b"Inference-Header-Content-Length: 10")),
]  # fmt: skip

CASES = [*FRAMING, *REQUEST_LINE_AND_HEADERS, *MULTIPART, *IMAGES, *JSON_BODIES, *V2_TENSORS]


# ---------------------------------------------------------------------------------------------
# The server under test


@dataclass
class Target:
    server: Server
    port: int
    pids: frozenset[int]  # the server's process tree once both workers were ready
    rss_before: int
    log_start: int
    seen: dict[str, str] = field(default_factory=dict)  # case id -> outcome, for the summary


def process_tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def tree_rss(pid: int) -> int:
    total = 0
    for process in process_tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += process.memory_info().rss
    return int(total)


def raise_open_files_limit(wanted: int = 16_384) -> None:
    """Raise this process's soft limit on open files (the server it starts inherits it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def need_open_files(count: int) -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < count + 500:
        pytest.skip(f"needs {count + 500} open files (ulimit -n is {soft})")


def wait_for_workers(server: Server, count: int, timeout_s: float = 90) -> None:
    """Until `count` workers have logged that they are ready (readyz answers from one)."""
    deadline = time.monotonic() + timeout_s
    while len(set(re.findall(r"digitserve\[(\d+)\]: ready:", server.log()))) < count:
        assert time.monotonic() < deadline, f"{count} workers not ready:\n{server.log()[-3000:]}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    raise_open_files_limit()
    log: Path = tmp_path_factory.mktemp("protocol-hardening") / "server.log"
    env = {
        "DIGITSERVE_HEADER_TIMEOUT_S": f"{HEADER_TIMEOUT_S:g}",
        "DIGITSERVE_BODY_TIMEOUT_S": f"{BODY_TIMEOUT_S:g}",
    }
    with running_server(log, "--model-repo", "exports", "--workers", str(WORKERS), env=env) as srv:
        wait_for_workers(srv, WORKERS)
        port = int(srv.url.rsplit(":", 1)[1])
        with Connection(port) as conn:  # one answered prediction before the baseline
            conn.send(PREDICT_SEVEN)
            assert outcome(conn.response()) == 200
        pids = frozenset(p.pid for p in process_tree(srv.process.pid))
        yield Target(srv, port, pids, tree_rss(srv.process.pid), len(srv.log()))


def served(port: int, raw: bytes = LIVEZ, times: int = 1) -> list[int]:
    """The statuses of `times` requests on one keep-alive connection."""
    with Connection(port) as conn:
        statuses = []
        for _ in range(times):
            conn.send(raw)
            statuses.append(outcome(conn.response()))
        return statuses


# ---------------------------------------------------------------------------------------------
# The corpus, one request per connection


def test_corpus_is_large_and_named_uniquely() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)) >= 40
    assert all(not (c.allowed - OK_OR_REFUSED - {204}) for c in CASES), "no case allows a 5xx"
    assert len(b"\r\n".join(MANY_HEADERS)) > HEADER_LIMIT > len(b"\r\n".join(SMALL_HEADERS))


@pytest.mark.parametrize("hostile", CASES, ids=[c.id for c in CASES])
def test_hostile_request(target: Target, hostile: Case) -> None:
    started = time.monotonic()
    response = exchange(target.port, hostile.writes)
    took = time.monotonic() - started
    target.seen[hostile.id] = describe(response)[:120]
    status = outcome(response)
    assert not 500 <= status < 600, f"{hostile.id}: a 5xx: {describe(response)}"
    expected = "4xx or a close" if hostile.allowed == REFUSED else sorted(hostile.allowed)
    if status not in hostile.allowed:
        pytest.fail(f"{hostile.id}: got {describe(response)}, expected {expected} ({hostile.why})")
    assert took < WAIT_S + MARGIN_S, f"{hostile.id} took {took:.1f} s"


# ---------------------------------------------------------------------------------------------
# Slow, silent and idle clients


def partial_header(i: int) -> bytes:
    return b"GET /livez?slow=%d HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " % i


def partial_body(i: int) -> bytes:
    head = request(b"POST", b"/predict", [FORM, b"Content-Length: 8192"], length=False)
    return head + FORM_HEAD + b"%d" % i


def test_slow_headers_and_bodies_are_cut_off_while_others_are_served(target: Target) -> None:
    """50 connections stall in their headers and 50 in their bodies; a normal client is served
    meanwhile, and every stalled connection is then closed by the server (a 408 first is
    allowed)."""
    stalled: list[Connection] = []
    try:
        for i in range(50):
            for data in (partial_header(i), partial_body(i)):
                conn = Connection(target.port)
                conn.send(data)
                stalled.append(conn)
        opened = time.monotonic()
        assert served(target.port, LIVEZ, 3) == [200] * 3
        assert served(target.port, PREDICT_SEVEN, 3) == [200] * 3
        served_in = time.monotonic() - opened
        outcomes = []
        deadline = opened + WAIT_S
        for conn in stalled:
            outcomes.append(outcome(conn.response(max(0.0, deadline - time.monotonic()))))
        wrong = [(i, o) for i, o in enumerate(outcomes) if o not in (408, CLOSED)]
        assert not wrong, f"(connection, status) not closed with 408 or a close: {wrong[:10]}"
        print(f"normal client served in {served_in:.2f} s while 100 connections stalled")
    except NoAnswer as exc:
        raise AssertionError(f"a stalled connection was not closed: {exc}") from None
    finally:
        for conn in stalled:
            conn.close()


def test_trickled_headers_are_cut_off_at_the_header_timeout(target: Target) -> None:
    """One header byte every half second: the deadline counts from the connection, not from
    the last byte."""
    writes: list[Write] = [partial_header(0)]
    for _ in range(int(2 * (WAIT_S + MARGIN_S))):
        writes += [b"a", Pause(0.5)]
    response = exchange(target.port, writes)  # NoAnswer unless it ends within WAIT_S
    assert outcome(response) in (408, CLOSED), describe(response)


def test_silent_connections_are_closed_after_the_header_timeout(target: Target) -> None:
    conns = [Connection(target.port) for _ in range(50)]
    opened = time.monotonic()
    try:
        assert served(target.port, LIVEZ, 2) == [200, 200]
        for conn in conns:
            assert conn.closed_by_server(max(0.0, opened + WAIT_S - time.monotonic())), (
                "a connection that never sent a byte is still open"
            )
            assert not conn.buffer, f"an answer to a silent connection: {bytes(conn.buffer)!r}"
    finally:
        for conn in conns:
            conn.close()


def test_keep_alive_then_partial_request_is_cut_off(target: Target) -> None:
    with Connection(target.port) as conn:
        conn.send(LIVEZ)
        assert outcome(conn.response()) == 200
        conn.send(b"GET /livez HTTP/1.1\r\nHo")
        response = conn.response()
        assert outcome(response) in (408, CLOSED), describe(response)


def test_idle_keep_alive_connection_is_closed(target: Target) -> None:
    with Connection(target.port) as conn:
        conn.send(LIVEZ)
        assert outcome(conn.response()) == 200
        answered = time.monotonic()
        assert conn.closed_by_server(), f"idle keep-alive connection open after {WAIT_S:g} s"
        print(f"idle keep-alive connection closed after {time.monotonic() - answered:.1f} s")
        assert not conn.buffer, bytes(conn.buffer)


# ---------------------------------------------------------------------------------------------
# Pipelining


def test_pipelined_requests_are_answered_in_order(target: Target) -> None:
    with Connection(target.port) as conn:
        conn.send(get(b"/livez") + get(b"/v2") + get(b"/readyz"))
        answers = [conn.response() for _ in range(3)]
    assert [outcome(a) for a in answers] == [200, 200, 200], [describe(a) for a in answers]
    bodies = [a.json() for a in answers if a is not None]
    assert isinstance(bodies[0], dict) and bodies[0].get("status") == "ok", bodies[0]
    assert isinstance(bodies[1], dict) and bodies[1].get("name") == "digitserve", bodies[1]
    assert isinstance(bodies[2], dict) and bodies[2].get("ready") is True, bodies[2]


def top_label(response: Response | None) -> object:
    body = None if response is None else response.json()
    return body["predictions"][0]["label"] if isinstance(body, dict) else None


def test_pipelined_predictions_are_answered_in_order(target: Target) -> None:
    with Connection(target.port) as conn:
        conn.send(PREDICT_SEVEN + predict(ONE_BY_ONE) + PREDICT_SEVEN)
        answers = [conn.response() for _ in range(3)]
    # The 1x1 image in the middle has no ink: its own 422 comes second, between the 7s.
    assert [outcome(a) for a in answers] == [200, 422, 200], [describe(a) for a in answers]
    assert top_label(answers[0]) == top_label(answers[2]) == "7"  # first and last, in order
    assert b"no_ink" in describe(answers[1]).encode()


def test_pipelined_valid_garbage_valid(target: Target) -> None:
    """The valid request before the garbage gets its own 200 first; then the garbage its 400;
    the request after the garbage cannot be framed, so the connection may end there."""
    with Connection(target.port) as conn:
        conn.send(PREDICT_SEVEN + b"GARBAGE \x00\x01 NONSENSE\r\n\r\n" + LIVEZ)
        answers: list[Response | None] = []
        for _ in range(3):
            answers.append(answer := conn.response())
            if answer is None:
                break
    seen = [outcome(a) for a in answers]
    print(f"pipelined valid, garbage, valid: {seen} (0: closed)")
    assert all(not 500 <= s < 600 for s in seen), [describe(a) for a in answers]
    assert seen[:2] == [200, 400], f"expected [200, 400, ...], got {seen}: " + "; ".join(
        describe(a) for a in answers
    )
    assert top_label(answers[0]) == "7", describe(answers[0])


# ---------------------------------------------------------------------------------------------
# Many connections at once (asyncio)

CROWD_BOUND_S = 60.0  # a ceiling on each crowd test, far above what it needs


async def read_status(reader: asyncio.StreamReader) -> int:
    """A response's status; its Content-Length body is read and dropped."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(
        (int(v) for n, _, v in (h.partition(":") for h in lines[1:])
         if n.strip().lower() == "content-length"), 0,
    )  # fmt: skip
    await reader.readexactly(length)
    return int(lines[0].split(" ")[1])


async def one_shot(port: int, raw: bytes) -> int:
    """Connect, send, read one answer: its status, or CLOSED."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(raw)
        await writer.drain()
        return await read_status(reader)
    except (asyncio.IncompleteReadError, ConnectionError):
        return CLOSED
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def normal_client(port: int, until: asyncio.Event, limit: int = 200) -> list[int]:
    """A client making ordinary requests, one connection each, until `until` is set."""
    statuses: list[int] = []
    for i in range(limit):
        if until.is_set() and statuses:
            break
        statuses.append(await one_shot(port, PREDICT_SEVEN if i % 2 else LIVEZ))
        await asyncio.sleep(0.1)
    return statuses


def test_1000_concurrent_connections(target: Target) -> None:
    need_open_files(1000)
    requests = [get(b"/livez"), get(b"/v2/health/live"), get(b"/v2"), get(b"/models")]

    async def crowd() -> tuple[list[int | BaseException], list[int]]:
        done = asyncio.Event()
        normal = asyncio.create_task(normal_client(target.port, done))
        async with asyncio.timeout(CROWD_BOUND_S):
            results = await asyncio.gather(
                *(one_shot(target.port, requests[i % len(requests)]) for i in range(1000)),
                return_exceptions=True,
            )
            done.set()
            return results, await normal

    results, normal = asyncio.run(crowd())
    statuses = [r if isinstance(r, int) else repr(r) for r in results]
    wrong = sorted({str(s) for s in statuses if s != 200})
    assert not wrong, f"{sum(s != 200 for s in statuses)} of 1000 not 200: {wrong[:10]}"
    assert normal and set(normal) == {200}, normal


def test_2000_idle_keep_alive_connections(target: Target) -> None:
    """2,000 connections each get one answer and then idle; a normal client is served
    meanwhile; the server then closes every idle one within its header timeout + margin."""
    need_open_files(2000)

    async def idle_one(gate: asyncio.Semaphore) -> tuple[int, float]:
        """The status of its one request, and how long it then idled until the server closed
        it (inf: not closed in time; -1: the server sent bytes nobody asked for)."""
        async with gate:  # at most 500 connecting at once
            reader, writer = await asyncio.open_connection(HOST, target.port)
            writer.write(LIVEZ)
            await writer.drain()
            status = await read_status(reader)
        answered = time.monotonic()
        try:
            async with asyncio.timeout(WAIT_S):
                rest = await reader.read(1024)  # b"": the server closed it
            return status, (-1.0 if rest else time.monotonic() - answered)
        except TimeoutError:
            return status, float("inf")
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def crowd() -> tuple[list[tuple[int, float] | BaseException], list[int]]:
        gate = asyncio.Semaphore(500)
        done = asyncio.Event()
        normal = asyncio.create_task(normal_client(target.port, done))
        async with asyncio.timeout(CROWD_BOUND_S):
            results = await asyncio.gather(
                *(idle_one(gate) for _ in range(2000)), return_exceptions=True
            )
            done.set()
            return results, await normal

    results, normal = asyncio.run(crowd())
    failed = [repr(r) for r in results if isinstance(r, BaseException)]
    assert not failed, f"{len(failed)} of 2000 failed: {sorted(set(failed))[:5]}"
    pairs = [r for r in results if not isinstance(r, BaseException)]
    assert {s for s, _ in pairs} == {200}, sorted({s for s, _ in pairs})
    assert normal and set(normal) == {200}, normal
    idled = sorted(t for _, t in pairs if 0 <= t < float("inf"))
    if idled:
        print(f"idle keep-alive connections closed after {idled[0]:.1f}-{idled[-1]:.1f} s idle")
    open_too_long = sum(t == float("inf") for _, t in pairs)
    sent_bytes = sum(t < 0 for _, t in pairs)
    assert not sent_bytes, f"{sent_bytes} idle connections got unrequested bytes"
    assert not open_too_long, f"{open_too_long} of 2000 idle connections open after {WAIT_S:g} s"


# ---------------------------------------------------------------------------------------------
# Afterwards (keep last: it checks what the tests above left behind)


def test_server_survives_the_corpus(target: Target) -> None:
    print("\nwhat each case got:")
    for name, seen in target.seen.items():
        print(f"  {name:45} {seen}")
    pid = target.server.process.pid
    assert target.server.process.poll() is None, "the server exited"
    pids = frozenset(p.pid for p in process_tree(pid))
    assert pids == target.pids, f"processes changed: {sorted(target.pids)} -> {sorted(pids)}"
    assert served(target.port, get(b"/readyz")) == [200]
    assert served(target.port, PREDICT_SEVEN) == [200]
    rss_after = tree_rss(pid)
    mib = 1024 * 1024
    print(
        f"\nserver process tree RSS: before {target.rss_before / mib:.1f} MiB, "
        f"after {rss_after / mib:.1f} MiB ({(rss_after - target.rss_before) / mib:+.1f} MiB), "
        f"{len(pids)} processes"
    )
    assert rss_after - target.rss_before < RSS_GROWTH_LIMIT
    log = target.server.log()[target.log_start :]
    for sign in ("Traceback", "Exception in ASGI", "Error in ASGI", "internal error on"):
        assert sign not in log, log[log.index(sign) - 2000 : log.index(sign) + 3000]
