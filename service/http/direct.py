"""The API app, with its busiest routes served without FastAPI's per-request machinery.

`POST /predict` and `POST /predict/batch` read their own multipart form and return a ready
response, so FastAPI's route matching, dependency solving and its own middleware stack only
cost CPU on them. `DirectApp` sends those requests through the same middlewares the app was
given (`app.user_middleware`, in the same order) to the handler, and turns an exception into
a response with the handler the app registered for it. Every other request, and every other
method on those paths (405 with Allow), takes FastAPI's path. The routes stay registered with
FastAPI too, for the OpenAPI schema.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from starlette.types import ASGIApp, Receive, Scope, Send

Handler = Callable[[Request], Awaitable[Response]]


class DirectApp(FastAPI):
    """A FastAPI app that serves the routes given to `direct()` without its routing."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._direct: dict[str, ASGIApp] = {}

    def direct(self, path: str, handler: Handler) -> None:
        """Serve `POST path` with `handler` through the app's middlewares (add those first)."""
        endpoint: ASGIApp = _Endpoint(self, handler)
        for middleware in reversed(self.user_middleware):  # [0] is the outermost
            endpoint = middleware.cls(endpoint, *middleware.args, **middleware.kwargs)
        self._direct[path] = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = self._direct.get(scope["path"])
            if endpoint is not None:
                scope["app"] = self  # what Request.app reads, as Starlette sets it
                await endpoint(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


class _Endpoint:
    """The handler as an ASGI app, answering its exceptions with the app's handlers."""

    def __init__(self, app: FastAPI, handler: Handler) -> None:
        self.app = app
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        try:
            response = await self.handler(request)
        except Exception as exc:
            answer = self._exception_handler(exc)(request, exc)
            response = await answer if inspect.isawaitable(answer) else answer
        await response(scope, receive, send)

    def _exception_handler(
        self, exc: Exception
    ) -> Callable[[Request, Exception], Response | Awaitable[Response]]:
        # The most specific registered class, as Starlette looks it up; the app registers one
        # for Exception, so there always is one.
        for cls in type(exc).__mro__:
            handler = self.app.exception_handlers.get(cls)
            if handler is not None:
                return handler
        raise exc
