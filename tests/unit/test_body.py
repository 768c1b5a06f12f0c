"""Reading a request body whole: the idle and total timeouts, and a client that goes away."""

from __future__ import annotations

import asyncio

import pytest
from starlette.types import Message, Receive

from service.core.errors import ClientDisconnected, RequestTimeout
from service.http.body import read_body, replay


def messages(*parts: Message) -> Receive:
    """A receive() that hands out `parts`, then never returns (a client that stalls)."""
    queue = list(parts)

    async def receive() -> Message:
        if queue:
            return queue.pop(0)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    return receive


def test_a_body_in_pieces_is_joined() -> None:
    receive = messages(
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.request", "body": b"cd", "more_body": False},
    )
    assert asyncio.run(read_body(receive, idle_s=1, total_s=1)) == b"abcd"


@pytest.mark.parametrize(
    "parts",
    [(), ({"type": "http.request", "body": b"ab", "more_body": True},)],
    ids=["no-byte-at-all", "stalls-after-a-piece"],
)
def test_a_body_that_stops_arriving_times_out_after_the_idle_time(parts: tuple[Message]) -> None:
    async def timed() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(RequestTimeout) as info:
            await read_body(messages(*parts), idle_s=0.05, total_s=10)
        assert info.value.status == 408
        return loop.time() - started

    # The first read had no limit at all once (asyncio.timeout given a loop time as a delay).
    assert asyncio.run(timed()) < 5


def test_the_whole_body_must_arrive_within_the_total_time() -> None:
    async def trickle() -> Message:
        await asyncio.sleep(0.01)
        return {"type": "http.request", "body": b"x", "more_body": True}

    async def timed() -> None:
        with pytest.raises(RequestTimeout) as info:
            await read_body(trickle, idle_s=1.0, total_s=0.1)
        assert 5 <= info.value.detail["received_bytes"] <= 10

    asyncio.run(timed())


def test_a_client_that_goes_away_is_not_an_error() -> None:
    receive = messages(
        {"type": "http.request", "body": b"abc", "more_body": True}, {"type": "http.disconnect"}
    )
    with pytest.raises(ClientDisconnected) as info:
        asyncio.run(read_body(receive, idle_s=1, total_s=1))
    assert info.value.detail == {"received_bytes": 3}


def test_replay_hands_the_body_out_once_then_listens_to_the_connection() -> None:
    async def run() -> list[Message]:
        replayed = replay(b"body", messages({"type": "http.disconnect"}))
        return [await replayed(), await replayed()]

    first, second = asyncio.run(run())
    assert first == {"type": "http.request", "body": b"body", "more_body": False}
    assert second == {"type": "http.disconnect"}
