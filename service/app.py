"""The HTTP API: FastAPI routes mounted into the BentoML service.

Each request runs the stages in order: read (size-limited) -> decode -> validate -> preprocess
-> batch + infer -> postprocess -> JSON. Everything before the batch happens per request.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from PIL import Image
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelrepo.manifest import ImagePreprocessing
from service import admin, decode
from service.admission import Overloaded, Ticket
from service.body import read_body, replay
from service.direct import DirectApp
from service.errors import (
    ApiError,
    BadRequest,
    ClientDisconnected,
    InvalidImage,
    NoInk,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    ServiceUnavailable,
    UnsupportedMediaType,
    ValidationFailed,
)
from service.forms import form_openapi, predict_form, require_json
from service.memory import give_back
from service.models import LoadedModel
from service.postprocess import top_k as rank
from service.runtime import Runtime
from service.schemas import (
    BatchPredictResponse,
    ErrorResponse,
    HealthResponse,
    ImageResult,
    JsonPredictRequest,
    ModelInfo,
    ModelsResponse,
    PredictResponse,
    ReadyResponse,
    TextPredictRequest,
)
from service.security import SecurityMiddleware, needs_predict_key
from service.settings import ServiceSettings
from service.text import text_to_input

log = logging.getLogger("digitserve")

PROTOCOL_PREFIX = "/v2"  # the Open Inference Protocol's endpoints (service/v2.py)

PREDICT_ENDPOINTS = frozenset(
    {"/predict", "/predict/json", "/predict/batch", "/predict/text", "/v2/infer"}
)

OUTCOME_OF: dict[type[ApiError], str] = {
    RequestTimeout: "request_timeout",
    ClientDisconnected: "client_disconnected",
    InvalidImage: "invalid_image",
    NoInk: "no_ink",
    UnsupportedMediaType: "unsupported_media_type",
    PayloadTooLarge: "payload_too_large",
    NotFound: "not_found",
    ValidationFailed: "validation_failed",
    BadRequest: "validation_failed",
    ServiceUnavailable: "overloaded",
}

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in [
        (400, "undecodable image (or a JPEG with over 100 scans) or malformed request"),
        (404, "unknown model or version"),
        (408, "the request body stopped arriving in time (the connection is then closed)"),
        (413, "request body, image or pixel count over the limit"),
        (415, "not a PNG, JPEG, GIF, BMP or WebP image, or a body of the wrong media type"),
        (
            422,
            "a field is missing or out of range (the detail names it), or the image holds no "
            'digit (detail.reason "no_ink": blank or uniform)',
        ),
        (401, "an API key is required (DIGITSERVE_API_KEY is set) and none was sent"),
        (403, "the API key is not valid"),
        (431, "the request headers are larger than the limit"),
        (503, "overloaded or not ready; retry after the Retry-After seconds"),
    ]
}


# The whole body of a prediction request must arrive within this share of the request timeout,
# so that a body trickling in is answered 408 before BentoML's timeout answers 504.
BODY_SHARE_OF_TIMEOUT = 0.8


def endpoint_label(path: str) -> str:
    """The endpoint label of a prediction path: never the client's text."""
    endpoint = "/v2/infer" if is_protocol_path(path) else path
    return endpoint if endpoint in PREDICT_ENDPOINTS else "other"


class AdmissionMiddleware:
    """Reads a prediction request's body whole (408 when it stalls), then lets the request
    through the worker's admission gate. Its latency budget starts once the body has arrived,
    so a slow upload neither spends it nor holds a place meanwhile; a request that the work
    already admitted would push past its budget is refused before its body is read."""

    def __init__(self, app: ASGIApp, runtime: Callable[[], Runtime | None]) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        arrived = time.perf_counter()
        state = scope.setdefault("state", {})
        state["received"] = arrived
        runtime = self.runtime()
        if runtime is None or not runtime.ready or not needs_predict_key(scope["path"]):
            await self.app(scope, receive, send)
            return
        admission, settings = runtime.admission, runtime.settings
        try:
            admission.check(arrived)  # hopeless already: refused without reading the body
            body = await read_body(
                receive,
                idle_s=settings.body_timeout_s,
                total_s=settings.request_timeout_s * BODY_SHARE_OF_TIMEOUT,
            )
            arrived = time.perf_counter()
            ticket = admission.enter(arrived)
        except (Overloaded, RequestTimeout, ClientDisconnected) as exc:
            count_unresolved(runtime, scope["path"], exc)
            await send_error(send, exc, scope["path"])
            return
        state["received"] = arrived
        state["admission"] = ticket
        try:
            await self.app(scope, replay(body, receive), send)
        finally:
            admission.leave(ticket)


def count_unresolved(runtime: Runtime, path: str, exc: ApiError) -> None:
    """Count a prediction request answered before its model was known."""
    outcome = outcome_of(exc)
    if isinstance(exc, Overloaded):
        runtime.metrics.rejected.labels("unknown", "", exc.reason).inc()
    elif isinstance(exc, ClientDisconnected):
        log.info("client disconnected before its %s request was read", path[:100])
    else:
        log.info("rejected POST %s: %d %s", path[:100], exc.status, exc.message)
    runtime.metrics.requests.labels("unknown", "", endpoint_label(path), outcome).inc()


def outcome_of(exc: ApiError) -> str:
    return next((o for cls, o in OUTCOME_OF.items() if isinstance(exc, cls)), "error")


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


async def send_error(send: Send, exc: ApiError, path: str = "") -> None:
    """Answer `exc` in the API's shape from ASGI middleware (outside FastAPI's handlers)."""
    response = error_response(exc, path)
    await send(
        {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": response.raw_headers,
        }
    )
    await send({"type": "http.response.body", "body": response.body})


def json_body(body: BaseModel) -> Response:
    """A response model as a ready JSON response: FastAPI passes a Response through as it is,
    without validating and encoding the model a second time (response_model documents it)."""
    return Response(body.model_dump_json(), media_type="application/json")


def error_response(exc: ApiError, path: str = "") -> JSONResponse:
    # The Open Inference Protocol's clients (service/v2.py) read errors as {"error": "..."}.
    body = {"error": exc.message} if is_protocol_path(path) else exc.body()
    return JSONResponse(body, status_code=exc.status, headers=exc.headers())


def is_protocol_path(path: str) -> bool:
    return path == PROTOCOL_PREFIX or path.startswith(PROTOCOL_PREFIX + "/")


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime | None = getattr(request.app.state, "runtime", None)
    if runtime is None or not runtime.ready:
        raise ServiceUnavailable("not ready: models are still loading", detail={"ready": False})
    return runtime


def check_top_k(top_k: int, model: LoadedModel) -> None:
    classes = len(model.manifest.labels)
    if not 1 <= top_k <= classes:
        raise ValidationFailed(
            f"top_k must be between 1 and {classes} for {model.key}",
            detail=[
                {"field": "top_k", "message": f"must be between 1 and {classes}", "value": top_k}
            ],
        )


async def to_input(runtime: Runtime, model: LoadedModel, data: bytes) -> np.ndarray:
    """decode -> validate -> preprocess one image, timed per model. The header is read here;
    an image that is costly to decode (many pixels or scans, or a large file) is decoded in
    the worker's one decode thread, so the event loop keeps answering others meanwhile and
    at most one large image per worker is in memory at a time."""
    started = time.perf_counter()
    settings = runtime.settings
    spec = model.manifest.preprocessing
    if not isinstance(spec, ImagePreprocessing):
        raise ValidationFailed(
            f"model {model.key} classifies text: send text to /predict/text",
            detail=[{"field": "model", "message": "not an image model", "value": model.name}],
        )
    image = decode.open_image(
        data, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_image_pixels
    )
    if decode.is_costly(image, data):
        loop = asyncio.get_running_loop()
        x = await loop.run_in_executor(runtime.decoder, decode_large, image, spec)
    else:
        x = decode.image_to_input(decode.load_image(image), spec)
    runtime.metrics.preprocess_seconds.labels(model.name, str(model.version)).observe(
        time.perf_counter() - started
    )
    return x


def decode_large(image: Image.Image, spec: ImagePreprocessing) -> np.ndarray:
    """In the decode thread: decode and preprocess, then give the freed memory back."""
    try:
        return decode.image_to_input(decode.load_image(image), spec)
    finally:
        image.close()
        give_back()


T = TypeVar("T")


async def counted(
    request: Request,
    runtime: Runtime,
    endpoint: str,
    model_name: str | None,
    version: int | None,
    work: Callable[[LoadedModel], Awaitable[T]],
) -> T:
    """Resolve the model a request names and run `work` on it, counting the request by model,
    version and outcome (an unknown model is counted as "unknown", never the client's text)."""
    model_label, version_label = "unknown", ""
    received = arrival(request)
    try:
        model = runtime.models.resolve(model_name, version)
        model_label, version_label = model.name, str(model.version)
        with runtime.admission.admit(model.key):
            result = await work(model)
    except ApiError as exc:
        outcome = outcome_of(exc)
        runtime.metrics.requests.labels(model_label, version_label, endpoint, outcome).inc()
        if isinstance(exc, Overloaded):
            runtime.metrics.rejected.labels(model_label, version_label, exc.reason).inc()
        raise
    runtime.metrics.requests.labels(model_label, version_label, endpoint, "ok").inc()
    runtime.metrics.request_seconds.labels(model_label, version_label, endpoint).observe(
        time.perf_counter() - received
    )
    return result


async def infer(
    request: Request, runtime: Runtime, model: LoadedModel, x: np.ndarray
) -> np.ndarray:
    """Batch `x` with the model's other requests, unless the request's budget is already spent
    (then 503 at once: answering it late helps no one and delays the requests behind it)."""
    runtime.admission.check_deadline(arrival(request))
    ticket: Ticket | None = getattr(request.state, "admission", None)
    if ticket is not None:  # the gate counted one item until the request was parsed
        runtime.admission.resize(ticket, len(x))
    return await runtime.batcher(model).infer(x)


def arrival(request: Request) -> float:
    """When the request's body had arrived (AdmissionMiddleware; for other requests when
    their headers had), as perf_counter, or now."""
    received: float | None = getattr(request.state, "received", None)
    return received if received is not None else time.perf_counter()


def elapsed_ms(request: Request) -> float:
    return round((time.perf_counter() - arrival(request)) * 1000, 3)


InputMaker = Callable[[Runtime, LoadedModel], Awaitable[np.ndarray]]


def image_input(data: bytes) -> InputMaker:
    """The model input for one uploaded image (decoded and preprocessed per request)."""
    return lambda runtime, model: to_input(runtime, model, data)


async def predict_one(
    request: Request,
    endpoint: str,
    make_input: InputMaker,
    model_name: str | None,
    version: int | None,
    top_k: int,
) -> PredictResponse:
    """One input (an image or a text) -> the named model's top_k classes, counted and batched."""
    runtime = runtime_of(request)

    async def work(model: LoadedModel) -> PredictResponse:
        check_top_k(top_k, model)
        x = await make_input(runtime, model)
        logits = await infer(request, runtime, model, x)
        return PredictResponse(
            model=model.name,
            version=model.version,
            predictions=rank(logits[0], model.manifest.labels, top_k),
            latency_ms=elapsed_ms(request),
        )

    return await counted(request, runtime, endpoint, model_name, version, work)


def create_app(runtime: Runtime | None = None) -> DirectApp:
    """The API. `runtime` may be attached later (the BentoML service does so per worker)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt: Runtime | None = getattr(app.state, "runtime", None)
        if rt is not None and not rt.ready:
            await rt.start()
        yield
        if rt is not None:
            await rt.stop()

    app = DirectApp(
        title="digitserve",
        summary="Image classification over an ONNX model repository, with adaptive batching.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # BentoML serves the OpenAPI page at / and merges these routes into it
        redoc_url=None,
        responses=ERROR_RESPONSES,
    )
    if runtime is not None:
        app.state.runtime = runtime

    def max_body() -> int:
        rt: Runtime | None = getattr(app.state, "runtime", None)
        return rt.settings.max_upload_bytes if rt else 10 * 1024 * 1024

    def settings() -> ServiceSettings | None:
        rt: Runtime | None = getattr(app.state, "runtime", None)
        return rt.settings if rt else None

    def current_runtime() -> Runtime | None:
        return getattr(app.state, "runtime", None)

    app.add_middleware(AdmissionMiddleware, runtime=current_runtime)
    # Outside the admission gate: it reads the body through this middleware's limit.
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=max_body)
    # Added last, so it runs first: an unauthorised request's body is never read.
    app.add_middleware(SecurityMiddleware, settings=settings, send_error=send_error)

    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, exc: ApiError) -> JSONResponse:
        if not isinstance(exc, Overloaded):  # the gate logs its refusals, a line per period
            log.info(
                "rejected %s %s: %d %s", request.method, request.url.path, exc.status, exc.message
            )
        return error_response(exc, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"field": None, "message": f"the body is not valid JSON ({err['ctx']['error']})"}
            if err["type"] == "json_invalid"
            else {
                "field": ".".join(str(p) for p in err["loc"] if p not in ("body", "query")) or None,
                "message": err["msg"],
            }
            for err in exc.errors()
        ]
        return await on_api_error(request, ValidationFailed(detail=problems))

    @app.exception_handler(ClientDisconnect)
    async def on_disconnect(request: Request, exc: ClientDisconnect) -> JSONResponse:
        # Starlette raises it when the client went away while its body was being read: one
        # line, no traceback, and 499 (which nobody hears) instead of a 500.
        log.info("client disconnected during %s %s", request.method, request.url.path[:100])
        return error_response(ClientDisconnected(), request.url.path)

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return error_response(ApiError("internal error", detail=None), request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Keep Starlette's headers, e.g. the Allow that RFC 9110 requires on a 405.
        error = ApiError(str(exc.detail).lower(), status=exc.status_code, headers=exc.headers)
        return await on_api_error(request, error)

    @app.post(
        "/predict",
        response_model=PredictResponse,
        tags=["predict"],
        summary="Classify one uploaded image",
        openapi_extra=form_openapi(
            "image", many=False, description="PNG, JPEG, GIF, BMP or WebP image"
        ),
    )
    async def predict(request: Request) -> Response:
        async with predict_form(request, "image", max_files=1) as form:
            if len(form.files) != 1:
                raise BadRequest(
                    "send exactly one 'image' part; use /predict/batch for several",
                    detail={"field": "image", "parts": len(form.files)},
                )
            data = await form.files[0].read()
        o = form.options
        return json_body(
            await predict_one(request, "/predict", image_input(data), o.model, o.version, o.top_k)
        )

    @app.post(
        "/predict/json",
        response_model=PredictResponse,
        tags=["predict"],
        summary="Classify one base64-encoded image sent as JSON",
        dependencies=[Depends(require_json)],  # 415 for a body that is not JSON
    )
    async def predict_json(request: Request, body: JsonPredictRequest) -> Response:
        try:
            data = base64.b64decode(body.image_base64, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest(
                "image_base64 is not valid base64", detail={"field": "image_base64"}
            ) from None
        return json_body(
            await predict_one(
                request, "/predict/json", image_input(data), body.model, body.version, body.top_k
            )
        )

    @app.post(
        "/predict/text",
        response_model=PredictResponse,
        dependencies=[Depends(require_json)],
        tags=["predict"],
        summary="Classify a text (or a text pair) with a text model",
        description="Tokenized exactly as in training (the manifest carries the vocabulary, "
        "max length and rules); batched with other text requests to the same model.",
    )
    async def predict_text(request: Request, body: TextPredictRequest) -> Response:
        name = body.model or runtime_of(request).models.default_text_model()

        async def text_input(runtime: Runtime, model: LoadedModel) -> np.ndarray:
            return text_to_input(model, body.text, body.text_pair)

        return json_body(
            await predict_one(request, "/predict/text", text_input, name, body.version, body.top_k)
        )

    @app.post(
        "/predict/batch",
        response_model=BatchPredictResponse,
        tags=["predict"],
        summary="Classify several uploaded images in one request",
        openapi_extra=form_openapi(
            "images", many=True, description="several images, each a part named 'images'"
        ),
    )
    async def predict_batch(request: Request) -> Response:
        runtime = runtime_of(request)
        limit = runtime.settings.max_batch_images
        async with predict_form(request, "images", max_files=limit) as form:
            if len(form.files) > limit:
                raise PayloadTooLarge(
                    f"at most {limit} images per request",
                    detail={"images": len(form.files), "limit": limit},
                )
            uploads = [(f.filename, await f.read()) for f in form.files]
        model, version, top_k = form.options.model, form.options.version, form.options.top_k

        async def work(resolved: LoadedModel) -> BatchPredictResponse:
            check_top_k(top_k, resolved)
            inputs = []
            for i, (filename, data) in enumerate(uploads):
                try:
                    inputs.append(await to_input(runtime, resolved, data))
                except ApiError as exc:
                    exc.detail = {
                        "image": i,
                        "filename": filename,
                        **(exc.detail if isinstance(exc.detail, dict) else {}),
                    }
                    raise
            logits = await infer(request, runtime, resolved, np.concatenate(inputs))
            results = [
                ImageResult(
                    index=i,
                    filename=filename,
                    predictions=rank(row, resolved.manifest.labels, top_k),
                )
                for i, ((filename, _), row) in enumerate(zip(uploads, logits, strict=True))
            ]
            return BatchPredictResponse(
                model=resolved.name,
                version=resolved.version,
                results=results,
                latency_ms=elapsed_ms(request),
            )

        return json_body(await counted(request, runtime, "/predict/batch", model, version, work))

    # The two multipart endpoints, the hot path, skip FastAPI's routing (see service.direct).
    app.direct("/predict", predict)
    app.direct("/predict/batch", predict_batch)

    @app.get(
        "/models",
        response_model=ModelsResponse,
        tags=["models"],
        summary="Loaded models and versions with their manifests' summaries",
    )
    async def list_models(request: Request) -> ModelsResponse:
        runtime = runtime_of(request)
        registry = runtime.models
        infos = [
            ModelInfo(
                name=m.name,
                version=m.version,
                default=m.name == registry.default_model,
                latest=m.version == registry.latest_version(m.name),
                task=m.manifest.task,
                arch=m.manifest.arch,
                input=m.manifest.input.model_dump(),
                preprocessing=m.manifest.preprocessing.model_dump(mode="json"),
                labels=m.manifest.labels,
                dataset=m.manifest.training.dataset,
                test_accuracy=m.manifest.training.test_accuracy,
                provider=m.provider,
                sha256=m.manifest.sha256,
            )
            for m in registry
        ]
        return ModelsResponse(default_model=registry.default_model, models=infos)

    app.include_router(admin.router)
    from service import v2  # NOTE: imported here, not at the top: v2 builds on this module

    app.include_router(v2.router)

    @app.get(
        "/livez",
        response_model=HealthResponse,
        tags=["health"],
        summary="Liveness: the process answers",
    )
    async def livez() -> HealthResponse:
        return HealthResponse(status="ok")

    @app.get(
        "/readyz",
        response_model=ReadyResponse,
        tags=["health"],
        summary="Readiness: every configured model is loaded and warmed",
    )
    async def readyz(request: Request) -> ReadyResponse:
        runtime = runtime_of(request)  # 503 + Retry-After until ready
        reason = runtime.not_ready_reason()
        if reason is not None:
            raise ServiceUnavailable(
                f"not ready: {reason['reason']}", detail={"ready": False, **reason}
            )
        return ReadyResponse(ready=True, models=[m.key for m in runtime.models])

    return app
