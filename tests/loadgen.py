"""A small asyncio load generator for tests that need load while something else happens
(SIGTERM, a reload, a dead worker, overload). Every loop is bounded in count and time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp


@dataclass
class Outcome:
    started: float  # time.monotonic()
    ended: float
    status: int | str  # HTTP status, or the exception's type name
    retry_after: str | None = None

    @property
    def latency_s(self) -> float:
        return self.ended - self.started


def predict_form(image: bytes, **fields: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    for name, value in fields.items():
        form.add_field(name, value)
    form.add_field("image", image, filename="image.png", content_type="image/png")
    return form


async def _send(
    session: aiohttp.ClientSession,
    url: str,
    image: bytes,
    headers: dict[str, str],
    outcomes: list[Outcome],
) -> None:
    started = time.monotonic()
    try:
        async with session.post(url, data=predict_form(image), headers=headers) as r:
            await r.read()
            outcomes.append(
                Outcome(started, time.monotonic(), r.status, r.headers.get("Retry-After"))
            )
    except (TimeoutError, aiohttp.ClientError) as exc:
        outcomes.append(Outcome(started, time.monotonic(), type(exc).__name__))


async def closed_loop(
    url: str,
    image: bytes,
    *,
    users: int,
    duration_s: float,
    max_requests: int = 200_000,
    headers: dict[str, str] | None = None,
    during: Callable[[], Awaitable[None]] | None = None,
) -> list[Outcome]:
    """`users` clients each POST `image` to `url` back to back for `duration_s` (at most
    `max_requests` in all); `during` runs meanwhile (e.g. sends a signal)."""
    outcomes: list[Outcome] = []
    stop_at = time.monotonic() + duration_s
    timeout = aiohttp.ClientTimeout(total=30)

    # One connection per user: aiohttp's default pool of 100 would make 128 users 100.
    connector = aiohttp.TCPConnector(limit=users)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

        async def user() -> None:
            while time.monotonic() < stop_at and len(outcomes) < max_requests:
                await _send(session, url, image, headers or {}, outcomes)
                if not isinstance(outcomes[-1].status, int):
                    await asyncio.sleep(0.05)  # a refused connection: do not spin

        tasks = [asyncio.create_task(user()) for _ in range(users)]
        if during is not None:
            await during()
        await asyncio.gather(*tasks)
    return outcomes


async def open_loop(
    url: str,
    image: bytes,
    *,
    rate: float,
    duration_s: float,
    headers: dict[str, str] | None = None,
) -> list[Outcome]:
    """POST `image` at a constant `rate` per second for `duration_s`, each request on time
    whatever the others are doing (no client-side queue hides the server's)."""
    outcomes: list[Outcome] = []
    total = int(rate * duration_s)
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=1000)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        start = time.monotonic()
        tasks = []
        for i in range(total):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_send(session, url, image, headers or {}, outcomes)))
        await asyncio.gather(*tasks)
    return outcomes


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
