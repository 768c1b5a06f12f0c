"""The HTTP API, assembled: middlewares, error handlers and the routers of each way in, over one
worker's dataplane. The BentoML service mounts it (service/bento.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service.core.dataplane import DataPlane
from service.core.runtime import Runtime
from service.http.direct import DirectApp
from service.http.errors import ERROR_RESPONSES, EXCEPTION_HANDLERS
from service.http.middleware import AdmissionMiddleware, BodyLimitMiddleware
from service.http.routes import admin, demo, explain, health, models, predict, v2
from service.http.security import SecurityMiddleware
from service.settings import ServiceSettings

# Until a runtime is attached, bodies are limited to the settings' default.
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024


def attach(app: FastAPI, runtime: Runtime) -> DataPlane:
    """Serve `runtime`'s models (the BentoML service does so per worker, once they are loaded)."""
    app.state.runtime = runtime
    app.state.dataplane = DataPlane(runtime)
    return app.state.dataplane


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start an attached runtime that is not started yet, then the other ways in it serves
    (gRPC), in the worker's event loop; stop them in the reverse order."""
    runtime: Runtime | None = getattr(app.state, "runtime", None)
    if runtime is not None and not runtime.ready:
        await runtime.start()
    for listener in runtime.listeners if runtime is not None else []:
        await listener.start()
    yield
    if runtime is not None:
        for listener in reversed(runtime.listeners):
            await listener.stop()
        await runtime.stop()


def create_app(runtime: Runtime | None = None) -> DirectApp:
    """The API. `runtime` may be attached later (`attach`)."""
    app = DirectApp(
        title="digitserve",
        summary="Image classification over an ONNX model repository, with adaptive batching.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # routes/demo.py serves the OpenAPI page at /docs; BentoML, /docs.json
        redoc_url=None,
        responses=ERROR_RESPONSES,
        exception_handlers=EXCEPTION_HANDLERS,
    )
    if runtime is not None:
        attach(app, runtime)

    def runtime_now() -> Runtime | None:
        return getattr(app.state, "runtime", None)

    def dataplane() -> DataPlane | None:
        return getattr(app.state, "dataplane", None)

    def settings() -> ServiceSettings | None:
        rt = runtime_now()
        return rt.settings if rt else None

    def max_body() -> int:
        s = settings()
        return s.max_upload_bytes if s else DEFAULT_MAX_BODY_BYTES

    app.add_middleware(AdmissionMiddleware, dataplane=dataplane)
    # Outside the admission gate: it reads the body through this middleware's limit.
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=max_body)
    # Added last, so it runs first: an unauthorised request's body is never read.
    app.add_middleware(SecurityMiddleware, settings=settings)
    for router in (predict.router, explain.router, models.router, admin.router, v2.router):
        app.include_router(router)
    app.include_router(health.router)
    app.include_router(demo.router)
    # The two multipart endpoints, the hot path, skip FastAPI's routing (see service.http.direct).
    app.direct("/predict", predict.predict)
    app.direct("/predict/batch", predict.predict_batch)
    return app
