"""uvicorn's httptools protocol with the guards a server on an open port needs below the API.

uvicorn gives a connection no time limit until its first request's headers are complete and
keeps whatever header bytes arrive: 50 slowloris connections stayed open for 20 s, and 1,000
that never sent a byte stayed open for good. And when a pipelined request after a valid one
is garbage, it answers 400 and closes at once, so the valid request before it, still being
served, never gets its answer. This class:

- closes a connection whose request headers are not complete within `header_timeout_s` of
  connecting or of its first byte after an answer (408 if it sent anything, else just closed);
- answers 431 and closes when the request line and headers pass `max_header_bytes`, while
  they arrive, before any of them is kept;
- answers a malformed request only after the requests before it on the connection have been
  answered, in order, then closes; a request whose own body is malformed (a bad chunk size)
  is answered at once, its handler told the client has gone;
- refuses what httptools lets through but RFC 9112 does not: versions other than HTTP/1.0
  and HTTP/1.1 (a request line without one is HTTP/0.9 to it, and CR LF in a path made the
  next line the version), and an HTTP/1.1 request without exactly one Host header.

`install()` makes `http="auto"` (what BentoML's worker asks uvicorn for) mean this class.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# Room for the request line and header separators beyond max_header_bytes, so that the API's
# own 431 (with its JSON body) answers requests just over the limit.
LINE_ALLOWANCE = 8 * 1024


def _answer(status: bytes, error: str, detail: dict[str, object]) -> bytes:
    """A complete response in the API's error shape, closing the connection."""
    body = json.dumps({"error": error, "detail": detail}).encode()
    return b"".join(
        [
            b"HTTP/1.1 ",
            status,
            b"\r\ncontent-type: application/json\r\ncontent-length: ",
            str(len(body)).encode(),
            b"\r\nconnection: close\r\n\r\n",
            body,
        ]
    )


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with a header deadline, a header size cap and in-order errors."""

    header_timeout_s = 10.0
    max_header_bytes = 16 * 1024  # the API's limit, as its own 431 reports it

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        self._sent_anything = False
        self._too_large = False
        self._deferred: bytes | None = None  # an error answer waiting for earlier answers
        self._hosts = 0  # Host headers of the request being parsed
        self._malformed: str | None = None  # why the request being parsed is refused

    # --- header deadline ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._deferred is not None:
            return  # the connection ends after the deferred answer: nothing more is parsed
        if self._header_timer is None and not self._busy():
            self._arm_header_timer()  # the first byte of a next request after an answer
        self._sent_anything = True
        super().data_received(data)

    def on_message_begin(self) -> None:
        self._header_bytes = 0
        self._hosts = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._count_header_bytes(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_header_bytes(len(name) + len(value) + 4)
        if name.lower() == b"host":
            self._hosts += 1
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._cancel_header_timer()
        version = self.parser.get_http_version()
        if version not in ("1.0", "1.1"):
            self._refuse(f"HTTP/{version} is not supported here: send HTTP/1.1 or HTTP/1.0")
        if version == "1.1" and self._hosts != 1:
            self._refuse(f"an HTTP/1.1 request needs exactly one Host header, not {self._hosts}")
        super().on_headers_complete()

    def _refuse(self, reason: str) -> None:
        self._malformed = reason
        raise ValueError(reason)  # ends feed_data: a parse error, answered 400

    def on_response_complete(self) -> None:
        if self._deferred is None:
            self._sent_anything = False
            super().on_response_complete()
            return
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        if self.pipeline:  # requests parsed before the bad one still go first, in order
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self._answer_and_close(self._deferred)

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        answer = _answer(
            b"408 Request Timeout",
            "the request headers did not arrive in time",
            {"header_timeout_s": self.header_timeout_s},
        )
        if self._busy():  # a pipelined request is slow: end after the answers in progress
            self._defer(answer)
        elif self._sent_anything:
            self._answer_and_close(answer)
        else:
            self.transport.close()

    # --- header size -------------------------------------------------------------------
    def _count_header_bytes(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > self.max_header_bytes + LINE_ALLOWANCE:
            self._too_large = True
            raise ValueError("request headers over the limit")  # ends feed_data: a parse error

    # --- errors in order ---------------------------------------------------------------
    def send_400_response(self, msg: str) -> None:
        self._cancel_header_timer()
        if self._too_large:
            answer = _answer(
                b"431 Request Header Fields Too Large",
                "the request headers are larger than the limit",
                {"bytes": self._header_bytes, "limit_bytes": self.max_header_bytes},
            )
        else:
            reason, self._malformed = self._malformed or msg, None
            answer = _answer(b"400 Bad Request", "malformed HTTP request", {"reason": reason})
        cycle = self.cycle
        if (
            cycle is not None
            and not self.pipeline
            and cycle.more_body
            and not cycle.response_started
        ):  # the error is in this request's own body: its handler waits for the rest in vain
            cycle.disconnected = True
            cycle.message_event.set()
            self._answer_and_close(answer)
        elif self._busy():
            self._defer(answer)
        else:
            self._answer_and_close(answer)

    def _busy(self) -> bool:
        """Whether a request on this connection is being served or waits its turn."""
        return bool(self.pipeline) or (self.cycle is not None and not self.cycle.response_complete)

    def _defer(self, answer: bytes) -> None:
        self._deferred = answer
        self.flow.pause_reading()
        if self.cycle is not None:
            self.cycle.keep_alive = True  # closed by the deferred answer, not before it

    def _answer_and_close(self, answer: bytes) -> None:
        self._deferred = None
        self.transport.write(answer)
        self.transport.close()


def install(*, header_timeout_s: float, max_header_bytes: int) -> None:
    """Make uvicorn's `http="auto"` build GuardedHttpToolsProtocol, with these limits."""
    from uvicorn import config

    GuardedHttpToolsProtocol.header_timeout_s = header_timeout_s
    GuardedHttpToolsProtocol.max_header_bytes = max_header_bytes
    config.HTTP_PROTOCOLS["auto"] = f"{__name__}:GuardedHttpToolsProtocol"
