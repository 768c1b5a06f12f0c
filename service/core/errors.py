"""The one error shape of the API, `{"error": "...", "detail": ...}`, and the errors behind it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ApiError(Exception):
    """An error that is answered to the client with `status` and a JSON body."""

    status = 500
    error = "internal error"
    # The `outcome` label of digitserve_requests_total for requests that end in this error.
    outcome = "error"

    def __init__(
        self,
        message: str | None = None,
        detail: Any = None,
        *,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message or self.error)
        self.message = message or self.error
        self.detail = detail
        if status is not None:
            self.status = status
        self._headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "detail": self.detail}

    def headers(self) -> dict[str, str]:
        """Response headers the status calls for, e.g. the `Allow` of a 405 (RFC 9110)."""
        return dict(self._headers)


class BadRequest(ApiError):
    status = 400
    error = "bad request"
    outcome = "validation_failed"


class InvalidImage(BadRequest):
    error = "the image could not be decoded"
    outcome = "invalid_image"


class NotFound(ApiError):
    status = 404
    error = "not found"
    outcome = "not_found"


class MethodNotAllowed(ApiError):
    status = 405
    error = "method not allowed"


class PayloadTooLarge(ApiError):
    status = 413
    error = "payload too large"
    outcome = "payload_too_large"


class UnsupportedMediaType(ApiError):
    status = 415
    error = "unsupported media type"
    outcome = "unsupported_media_type"


class NoInk(ApiError):
    """422: the image is valid but holds no digit (a blank canvas, a uniform colour); a model
    that canonicalises its input refuses it rather than guess."""

    status = 422
    error = "nothing to classify"
    outcome = "no_ink"


class ValidationFailed(ApiError):
    """422; `detail` lists the problems as {"field": ..., "message": ...}."""

    status = 422
    error = "request validation failed"
    outcome = "validation_failed"

    def __init__(self, message: str | None = None, detail: Any = None, **options: Any) -> None:
        if isinstance(detail, list):  # a field name is the client's text (an unknown JSON key)
            detail = [clip_field(problem) for problem in detail]
        super().__init__(message, detail, **options)


FIELD_CHARS = 100


def clip_field(problem: Any) -> Any:
    """A problem whose field name is longer than FIELD_CHARS, with the name cut short: the
    answer must not echo a megabyte-long JSON key back."""
    field = problem.get("field") if isinstance(problem, dict) else None
    if isinstance(field, str) and len(field) > FIELD_CHARS:
        return {**problem, "field": field[:FIELD_CHARS] + "..."}
    return problem


class ServiceUnavailable(ApiError):
    status = 503
    error = "service unavailable"
    outcome = "overloaded"

    def __init__(self, message: str | None = None, detail: Any = None, retry_after_s: int = 1):
        super().__init__(message, detail)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class Unauthorized(ApiError):
    status = 401
    error = "an API key is required"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="digitserve"'}


class Forbidden(ApiError):
    status = 403
    error = "forbidden"


class HeadersTooLarge(ApiError):
    status = 431
    error = "request header fields too large"


class RequestTimeout(ApiError):
    """408: the request's body stopped arriving; the connection is closed after the answer,
    since the rest of the body may still be on its way."""

    status = 408
    error = "request timeout"
    outcome = "request_timeout"

    def headers(self) -> dict[str, str]:
        return {"Connection": "close"}


class ClientDisconnected(ApiError):
    """The client went away before its request was read or answered. Nobody hears the
    answer; its status is nginx's 499 so BentoML's request counter files it apart from 5xx."""

    status = 499
    error = "client closed the connection"
    outcome = "client_disconnected"
