"""Reading a request body whole, before the request may spend any of its latency budget.

A body that stops arriving is answered 408 (nginx's client_body_timeout): each read waits at
most `idle_s`, and the whole body must arrive within `total_s`. A client that goes away
meanwhile raises ClientDisconnected, which is nobody's error to log at length.
"""

from __future__ import annotations

import asyncio

from starlette.types import Message, Receive

from service.core.errors import ClientDisconnected, RequestTimeout


async def read_body(receive: Receive, *, idle_s: float, total_s: float) -> bytes:
    """Every `http.request` message's body, joined; RequestTimeout or ClientDisconnected."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    chunks: list[bytes] = []
    try:
        # One timeout for the whole read, moved forward as each piece arrives: cheaper than a
        # wait_for (a task) per message on the hot path.
        async with asyncio.timeout_at(started + min(idle_s, total_s)) as deadline:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientDisconnected(detail={"received_bytes": sum(map(len, chunks))})
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    return b"".join(chunks)
                deadline.reschedule(min(loop.time() + idle_s, started + total_s))
    except TimeoutError:
        raise RequestTimeout(
            "the request body did not arrive in time",
            detail={
                "received_bytes": sum(map(len, chunks)),
                "idle_timeout_s": idle_s,
                "total_timeout_s": total_s,
            },
        ) from None


def replay(body: bytes, receive: Receive) -> Receive:
    """A receive() that hands out `body` once, then waits on the connection as before (so
    the app still hears of a disconnect)."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replayed
