"""API keys, as every way in checks them: `Authorization: Bearer <key>` or `X-API-Key: <key>`
(HTTP headers, gRPC metadata), compared in constant time."""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from service.core.errors import Forbidden, Unauthorized


def presented_key(pairs: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The key among (lower-case name, value) pairs, if one was sent."""
    for name, value in pairs:
        if name == b"x-api-key":
            return value.strip()
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            return value[7:].strip()
    return None


def check_key(presented: bytes | None, expected: str, what: str) -> None:
    if presented is None:
        raise Unauthorized(
            f"{what} needs an API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
        )
    # compare_digest takes time independent of where the first difference is.
    if not hmac.compare_digest(presented, expected.encode()):
        raise Forbidden("the API key is not valid")
