"""The one error shape of the API, `{"error": "...", "detail": ...}`, and the errors behind it."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error that is answered to the client with `status` and a JSON body."""

    status = 500
    error = "internal error"

    def __init__(
        self, message: str | None = None, detail: Any = None, *, status: int | None = None
    ) -> None:
        super().__init__(message or self.error)
        self.message = message or self.error
        self.detail = detail
        if status is not None:
            self.status = status

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "detail": self.detail}

    def headers(self) -> dict[str, str]:
        return {}


class BadRequest(ApiError):
    status = 400
    error = "bad request"


class InvalidImage(BadRequest):
    error = "the image could not be decoded"


class NotFound(ApiError):
    status = 404
    error = "not found"


class MethodNotAllowed(ApiError):
    status = 405
    error = "method not allowed"


class PayloadTooLarge(ApiError):
    status = 413
    error = "payload too large"


class UnsupportedMediaType(ApiError):
    status = 415
    error = "unsupported media type"


class ValidationFailed(ApiError):
    status = 422
    error = "request validation failed"


class ServiceUnavailable(ApiError):
    status = 503
    error = "service unavailable"

    def __init__(self, message: str | None = None, detail: Any = None, retry_after_s: int = 1):
        super().__init__(message, detail)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}
