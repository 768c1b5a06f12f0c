"""The service's errors as gRPC status codes, with the retry hint where HTTP says Retry-After."""

from __future__ import annotations

import grpc

from service.core.admission import Overloaded
from service.core.errors import ApiError

CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    # Too many items or bytes is the client's request, not the server's load: not
    # RESOURCE_EXHAUSTED, which here means "overloaded, retry".
    413: grpc.StatusCode.INVALID_ARGUMENT,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    431: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
}


def status_of(exc: ApiError) -> tuple[grpc.StatusCode, tuple[tuple[str, str], ...]]:
    """The code and trailing metadata for `exc`. Overload is RESOURCE_EXHAUSTED and not being
    ready UNAVAILABLE; both say when to retry, as `retry-after` (seconds, as HTTP's header) and
    `grpc-retry-pushback-ms` (what gRPC's own retry policy reads)."""
    if isinstance(exc, Overloaded):
        code = grpc.StatusCode.RESOURCE_EXHAUSTED
    else:
        code = CODES.get(exc.status, grpc.StatusCode.INTERNAL)
    retry = exc.headers().get("Retry-After")
    if retry is None:
        return code, ()
    return code, (("retry-after", retry), ("grpc-retry-pushback-ms", str(int(retry) * 1000)))
