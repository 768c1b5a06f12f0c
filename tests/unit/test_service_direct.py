"""DirectApp on its own: direct routes run the app's middlewares in order and its exception
handlers, other methods and paths take FastAPI's routing."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.http.direct import DirectApp


class Tag:
    """Middleware that appends its name to the x-seen response header."""

    def __init__(self, app: ASGIApp, name: str) -> None:
        self.app = app
        self.name = name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-seen", self.name.encode())]
            await send(message)

        await self.app(scope, receive, tagged)


class Refused(Exception):
    pass


class RefusedLoudly(Refused):
    pass


def make_app() -> DirectApp:
    app = DirectApp()
    app.add_middleware(Tag, name="inner")
    app.add_middleware(Tag, name="outer")  # added last: runs first

    @app.exception_handler(Refused)
    async def on_refused(request: Request, exc: Refused) -> JSONResponse:
        return JSONResponse({"refused": type(exc).__name__}, status_code=409)

    @app.exception_handler(Exception)
    def on_anything(request: Request, exc: Exception) -> JSONResponse:  # a sync handler
        return JSONResponse({"error": "internal"}, status_code=500)

    @app.post("/echo")
    async def echo(request: Request) -> Response:
        body = await request.body()
        if body == b"refuse":
            raise RefusedLoudly()
        if body == b"crash":
            raise RuntimeError("boom")
        return PlainTextResponse(f"{request.app is app}:{body.decode()}")

    app.direct("/echo", echo)
    return app


def call(method: str, path: str, body: bytes = b"") -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=make_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.request(method, path, content=body)

    return asyncio.run(go())


def test_a_direct_route_runs_the_middlewares_outermost_first() -> None:
    r = call("POST", "/echo", b"hi")
    assert r.status_code == 200 and r.text == "True:hi"  # request.app is the app
    # Headers are appended on the way out: the inner middleware sees the response first.
    assert r.headers.get_list("x-seen") == ["inner", "outer"]


def test_exceptions_get_the_most_specific_registered_handler() -> None:
    r = call("POST", "/echo", b"refuse")
    assert (r.status_code, r.json()) == (409, {"refused": "RefusedLoudly"})
    assert r.headers.get_list("x-seen") == ["inner", "outer"]
    r = call("POST", "/echo", b"crash")
    assert (r.status_code, r.json()) == (500, {"error": "internal"})


def test_other_methods_and_paths_take_fastapis_routing() -> None:
    r = call("GET", "/echo")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert call("POST", "/nowhere").status_code == 404
