"""Errors answered over HTTP: the JSON body in the shape of the way in that owns the path, the
handlers FastAPI calls, and the answer ASGI middlewares send themselves."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import Send

from service.core.admission import Overloaded
from service.core.errors import ApiError, ClientDisconnected, ValidationFailed
from service.http.schemas import ErrorResponse
from service.http.surfaces import SURFACES

log = logging.getLogger("digitserve")

# The API's error answers, as the OpenAPI page documents them.
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


def error_response(exc: ApiError, path: str = "") -> JSONResponse:
    return JSONResponse(
        SURFACES.error_body(exc, path), status_code=exc.status, headers=exc.headers()
    )


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


async def on_api_error(request: Request, exc: ApiError) -> JSONResponse:
    if not isinstance(exc, Overloaded):  # the gate logs its refusals, a line per period
        log.info("rejected %s %s: %d %s", request.method, request.url.path, exc.status, exc.message)
    return error_response(exc, request.url.path)


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


async def on_disconnect(request: Request, exc: ClientDisconnect) -> JSONResponse:
    # Starlette raises it when the client went away while its body was being read: one line,
    # no traceback, and 499 (which nobody hears) instead of a 500.
    log.info("client disconnected during %s %s", request.method, request.url.path[:100])
    return error_response(ClientDisconnected(), request.url.path)


async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("internal error on %s %s", request.method, request.url.path)
    return error_response(ApiError("internal error", detail=None), request.url.path)


async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    # Keep Starlette's headers, e.g. the Allow that RFC 9110 requires on a 405.
    error = ApiError(str(exc.detail).lower(), status=exc.status_code, headers=exc.headers)
    return await on_api_error(request, error)


EXCEPTION_HANDLERS: dict[int | type[Exception], Callable[[Request, Any], Awaitable[Response]]] = {
    ApiError: on_api_error,
    RequestValidationError: on_validation_error,
    ClientDisconnect: on_disconnect,
    Exception: on_unexpected,
    StarletteHTTPException: on_http_error,
}
