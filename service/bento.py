"""The BentoML service: one per worker process, serving the FastAPI app over the runtime.

`python -m service` runs `bentoml serve service.bento:DigitServe` with the settings in the
environment; BentoML supplies the processes, /metrics, the OpenAPI schema at /docs.json (with
the Swagger UI files the /docs page loads) and graceful shutdown, the mounted app supplies the
API and the pages (the demo at /, the OpenAPI page at /docs).
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any, cast

import bentoml
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.core.errors import MethodNotAllowed, NotFound
from service.core.runtime import Runtime
from service.grpc.server import GrpcListener
from service.http.app import attach, create_app
from service.http.errors import send_error
from service.listener import balance_listener, worker_option
from service.logs import configure_logging
from service.protocol import install as install_protocol_guards
from service.settings import ServiceSettings
from service.timeouts import install as install_request_timeout
from service.traffic_labels import install as install_traffic_labels

install_request_timeout()  # before BentoML builds its app, in each worker
SETTINGS = ServiceSettings()
install_protocol_guards(  # before the worker builds uvicorn's config
    header_timeout_s=SETTINGS.header_timeout_s, max_header_bytes=SETTINGS.max_header_bytes
)
app = create_app()
API_PATHS = frozenset(getattr(route, "path", "") for route in app.routes)
# BentoML's own routes, outside the API (its OpenAPI schema, probes, metrics; its own page at /
# is shadowed by the demo page).
BENTOML_PATHS = frozenset(
    {"/", "/docs.json", "/schema.json", "/healthz", "/livez", "/readyz", "/metrics"}
)
# The part of a V2 path that names a model (and a version): the client's text.
V2_MODEL = re.compile(r"^/v2/models/(?!stats$)[^/]+(/versions/[^/]+)?")
log = logging.getLogger("digitserve")


def api_route(scope: Scope) -> str | None:
    """The path template of the API route for this request's path (for any method), if any."""
    if scope["path"] in API_PATHS:  # the common case, without matching each route
        return str(scope["path"])
    for route in app.routes:
        if route.matches(scope)[0] is not Match.NONE:
            return str(getattr(route, "path", scope["path"]))
    return None


def is_api_path(scope: Scope) -> bool:
    """Whether the API has a route for this request's path (for any method)."""
    return api_route(scope) is not None


def endpoint_label(scope: Scope) -> str:
    """BentoML's request-metrics label for this request: its route, never the client's text
    (the model name and version of a V2 path become `{name}` and `{version}`)."""
    if scope["path"] in BENTOML_PATHS:
        return str(scope["path"])
    route = api_route(scope)
    if route is None:
        return "other"
    return V2_MODEL.sub(lambda m: "/v2/models/{name}" + ("/versions/{version}" * bool(m[1])), route)


install_traffic_labels(endpoint_label)  # before BentoML builds its app, in each worker


class ApiShape:
    """The middleware that routes the API's paths to the API and keeps BentoML's own answers in
    the API's shape.

    The API's paths include /livez and /readyz, which so go to the API app ahead of BentoML's
    plain-text probes (they answer JSON, and 503 with Retry-After while not ready); BentoML's
    plain-text 404/405 for paths outside the API become the JSON error shape.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.bentoml_app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.bentoml_app(scope, receive, send)
            return
        if not scope["path"].isprintable():
            # A control character (an encoded newline, say) is in no route, but Starlette's
            # route patterns end in `$`, which also matches before a final newline: without
            # this, GET /models%0A answered as /models.
            await send_error(send, NotFound("no endpoint at this path"), scope["path"])
            return
        if is_api_path(scope):
            # Straight to the API: it answers in its own shape, so there is nothing to watch.
            # BentoML's request metrics, timeout, tracing and access log wrap this middleware
            # and still run; skipped are only its router, the mount and its request context,
            # which the API does not use (8% of the CPU per /predict, measured).
            await app(scope, receive, send)
            return
        replaced: int | None = None
        allow: str | None = None

        async def json_errors(message: Message) -> None:
            nonlocal replaced, allow
            if message["type"] == "http.response.start" and message["status"] in (404, 405):
                headers = dict(message.get("headers", []))
                if headers.get(b"content-type", b"").startswith(b"text/plain"):
                    replaced = message["status"]
                    if b"allow" in headers:  # a 405 says which methods would do
                        allow = headers[b"allow"].decode("latin-1")
                    return
            if replaced is not None and message["type"] == "http.response.body":
                if not message.get("more_body", False):
                    error = (
                        NotFound(f"no endpoint at {scope['path']}")
                        if replaced == 404
                        else MethodNotAllowed(
                            detail={"method": scope["method"]},
                            headers={"Allow": allow} if allow else None,
                        )
                    )
                    await send_error(send, error, scope["path"])
                return
            await send(message)

        await self.bentoml_app(scope, receive, json_errors)


@bentoml.service(
    name="digitserve",
    workers=SETTINGS.workers,
    traffic={"timeout": SETTINGS.request_timeout_s},
    logging={"access": {"enabled": SETTINGS.access_log}},
    # "/" matches every URL: without an exporter the spans only cost CPU.
    tracing={"excluded_urls": [] if SETTINGS.tracing else ["/"]},
)
@bentoml.asgi_app(app, path="/")
class DigitServe:
    def __init__(self) -> None:
        configure_logging()
        self.runtime = Runtime(SETTINGS)  # loads and warms every model, or fails start-up
        self.runtime.worker_index = bentoml.server_context.worker_index
        plane = attach(app, self.runtime)
        if SETTINGS.grpc_port:  # started with the app, in this worker's event loop
            self.runtime.listeners.append(GrpcListener(plane, app.version))
        self._balance_connections()

    def _balance_connections(self) -> None:
        # Last in start-up: the socket is uvicorn's to accept on as soon as this returns.
        fd = worker_option(sys.argv, "--fd")
        if SETTINGS.workers > 1 and SETTINGS.balance_connections and fd is not None:
            balance_listener(fd, worker_option(sys.argv, "--backlog") or 2048)

    def __is_ready__(self) -> bool:
        return self.runtime.ready


cast(Any, DigitServe).add_asgi_middleware(ApiShape)  # the decorators return a Service
