"""The ASGI middlewares in front of the API's routes: the body limit and the admission gate.
(The API key and header limits are service/http/security.py's.)"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.core.admission import Overloaded
from service.core.dataplane import DataPlane
from service.core.errors import ClientDisconnected, PayloadTooLarge, RequestTimeout
from service.http.body import read_body, replay
from service.http.errors import send_error
from service.http.surfaces import SURFACES

log = logging.getLogger("digitserve")

# The whole body of a prediction request must arrive within this share of the request timeout,
# so that a body trickling in is answered 408 before BentoML's timeout answers 504.
BODY_SHARE_OF_TIMEOUT = 0.8


class AdmissionMiddleware:
    """Reads an inference request's body whole (408 when it stalls), then lets the request
    through the worker's admission gate. Its latency budget starts once the body has arrived,
    so a slow upload neither spends it nor holds a place meanwhile; a request that the work
    already admitted would push past its budget is refused before its body is read."""

    def __init__(self, app: ASGIApp, dataplane: Callable[[], DataPlane | None]) -> None:
        self.app = app
        self.dataplane = dataplane

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        arrived = time.perf_counter()
        state = scope.setdefault("state", {})
        state["received"] = arrived
        plane = self.dataplane()
        path: str = scope["path"]
        surface = SURFACES.of(path)
        # Only gated inference paths pass the gate (/explain has a limit of its own).
        endpoint = surface.endpoint(path) if surface is not None and surface.gated else None
        if plane is None or not plane.ready or endpoint is None:
            await self.app(scope, receive, send)
            return
        settings = plane.runtime.settings
        try:
            plane.refuse_if_hopeless(arrived)  # refused without reading the body
            body = await read_body(
                receive,
                idle_s=settings.body_timeout_s,
                total_s=settings.request_timeout_s * BODY_SHARE_OF_TIMEOUT,
            )
            arrived = time.perf_counter()
            ticket = plane.enter(arrived)
        except (Overloaded, RequestTimeout, ClientDisconnected) as exc:
            if isinstance(exc, ClientDisconnected):
                log.info("client disconnected before its %s request was read", path[:100])
            elif not isinstance(exc, Overloaded):  # the gate logs its refusals itself
                log.info("rejected POST %s: %d %s", path[:100], exc.status, exc.message)
            plane.count_unresolved(endpoint, exc)
            await send_error(send, exc, path)
            return
        state["received"] = arrived
        state["admission"] = ticket
        try:
            await self.app(scope, replay(body, receive), send)
        finally:
            plane.leave(ticket)


class BodyLimitMiddleware:
    """413 for request bodies over the limit, by Content-Length or while streaming, before any
    parsing."""

    def __init__(self, app: ASGIApp, max_body_bytes: Callable[[], int]) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes()
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await send_error(
                send,
                PayloadTooLarge(
                    "the request body is larger than the upload limit",
                    detail={"bytes": int(length), "limit_bytes": limit},
                ),
                scope["path"],
            )
            return
        seen = 0
        too_large: PayloadTooLarge | None = None
        answered = False

        async def limited_receive() -> Message:
            nonlocal seen, too_large
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    too_large = PayloadTooLarge(
                        "the request body is larger than the upload limit",
                        detail={"limit_bytes": limit},
                    )
                    raise too_large
            return message

        async def guarded_send(message: Message) -> None:
            # Whatever the app makes of the aborted read (FastAPI answers 400), the client gets
            # the 413 that explains it.
            nonlocal answered
            if too_large is None:
                await send(message)
            elif not answered and message["type"] == "http.response.start":
                answered = True
                await send_error(send, too_large, scope["path"])

        try:
            await self.app(scope, limited_receive, guarded_send)
        except PayloadTooLarge:
            if not answered and too_large is not None:
                answered = True
                await send_error(send, too_large, scope["path"])
