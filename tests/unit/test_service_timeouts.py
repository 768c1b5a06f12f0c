"""The request-timeout middleware against BentoML's own: same answers, no timers left behind."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest
from bentoml._internal.server.http import traffic
from starlette.types import Message, Receive, Scope, Send

from service.timeouts import CancellingTimeoutMiddleware, install

ORIGINAL = traffic.TimeoutMiddleware


async def answer_ok(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def never_answer(scope: Scope, receive: Receive, send: Send) -> None:
    await asyncio.sleep(3600)


async def crash(scope: Scope, receive: Receive, send: Send) -> None:
    raise RuntimeError("boom")


async def call(middleware: Any) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        sent.append(message)

    await middleware({"type": "http", "method": "GET", "path": "/"}, receive, send)
    return sent


def live_timers() -> int:
    gc.collect()
    return sum(type(o) is asyncio.TimerHandle and not o.cancelled() for o in gc.get_objects())


@pytest.mark.parametrize(("cls", "left"), [(ORIGINAL, 200), (CancellingTimeoutMiddleware, 0)])
def test_answered_requests_leave_no_timer_behind(cls: type, left: int) -> None:
    async def go() -> int:
        middleware = cls(answer_ok, timeout=60)
        before = live_timers()
        for _ in range(200):
            assert [m["type"] for m in await call(middleware)] == [
                "http.response.start",
                "http.response.body",
            ]
        return live_timers() - before

    # BentoML's own keeps one armed 60 s timer per request (what the fix is for).
    assert asyncio.run(go()) == left


def test_no_answer_within_the_timeout_is_a_504_and_the_request_is_cancelled() -> None:
    sent = asyncio.run(call(CancellingTimeoutMiddleware(never_answer, timeout=0.05)))
    assert sent[0]["status"] == 504
    assert b"Not able to process the request in 0.05 seconds" in sent[1]["body"]


def test_a_request_that_raises_before_answering_raises_at_once() -> None:
    async def go() -> None:
        await asyncio.wait_for(call(CancellingTimeoutMiddleware(crash, timeout=60)), 5)

    with pytest.raises(RuntimeError, match="boom"):  # not a 60 s wait, as BentoML's does
        asyncio.run(go())


def test_install_makes_bentomls_app_factory_import_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(traffic, "TimeoutMiddleware", ORIGINAL)
    install()
    from bentoml._internal.server.http.traffic import TimeoutMiddleware

    assert TimeoutMiddleware is CancellingTimeoutMiddleware
