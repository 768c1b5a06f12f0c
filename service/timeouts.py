"""BentoML's request timeout, with its timer cancelled when the request is answered.

BentoML 1.4's `TimeoutMiddleware` arms `loop.call_later(timeout, ...)` for every request and
never cancels it, so each request leaves a timer, a future, a context and a bound method alive
for `timeout` seconds (60 by default): at 1,475 requests/s a worker held 53,000 of each after
20 s, and every full garbage collection walked them all, 92-146 ms and growing, once every
~10 s (seen with a gc callback in a worker). This class keeps the middleware's behaviour (504
when no response has started within the timeout) and cancels the timer once the response has
started or the request ended. `install()` puts it where BentoML's app factory imports it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bentoml._internal.server.http import traffic
from starlette.responses import JSONResponse
from starlette.types import Message, Receive, Scope, Send


class CancellingTimeoutMiddleware(traffic.TimeoutMiddleware):
    """`TimeoutMiddleware` that does not leave its timer behind."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Any] = loop.create_future()
        timer = loop.call_later(self.timeout, self._set_timer_out, waiter)

        async def started(message: Message) -> None:
            if not waiter.done():
                waiter.set_result(None)
                timer.cancel()
            await send(message)

        def ended(_: asyncio.Future[None]) -> None:
            if not waiter.done():  # it ended without answering (it raised): wake the waiter
                waiter.set_result(None)

        task = asyncio.ensure_future(self.app(scope, receive, started))
        task.add_done_callback(ended)
        try:
            await waiter
        except TimeoutError:
            if task.cancel():
                answer = JSONResponse(
                    {"error": f"Not able to process the request in {self.timeout} seconds"},
                    status_code=504,
                )
                await answer(scope, receive, send)
            return
        finally:
            timer.cancel()
        await task


def install() -> None:
    """Make BentoML's app factory build this middleware instead of its own (it imports the
    class from the module when it builds the app, in each worker)."""
    traffic.TimeoutMiddleware = CancellingTimeoutMiddleware  # type: ignore[misc]
