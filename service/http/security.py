"""API keys and header limits, checked before any route runs.

Inference endpoints (service.http.surfaces) need DIGITSERVE_API_KEY when it is set; /admin
endpoints always need DIGITSERVE_ADMIN_API_KEY and are refused (403) when it is not set. A key
is sent as `Authorization: Bearer <key>` or `X-API-Key: <key>` (service/core/keys.py).
Health, metrics, /models and the OpenAPI page stay open: probes and scrapers carry no keys.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from service.core.errors import ApiError, Forbidden, HeadersTooLarge
from service.core.keys import check_key, presented_key
from service.http.errors import send_error
from service.http.surfaces import needs_predict_key
from service.settings import ServiceSettings

ADMIN_PREFIX = "/admin"


class SecurityMiddleware:
    """431 for oversized headers; 401/403 for missing or wrong keys, in the API's error shape."""

    def __init__(self, app: ASGIApp, settings: Callable[[], ServiceSettings | None]) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        settings = self.settings()
        if scope["type"] != "http" or settings is None:
            await self.app(scope, receive, send)
            return
        try:
            self.check(scope, settings)
        except ApiError as exc:
            await send_error(send, exc, scope["path"])
            return
        await self.app(scope, receive, send)

    @staticmethod
    def check(scope: Scope, settings: ServiceSettings) -> None:
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        size = sum(len(k) + len(v) + 4 for k, v in headers)
        if size > settings.max_header_bytes:
            raise HeadersTooLarge(
                "the request headers are larger than the limit",
                detail={"bytes": size, "limit_bytes": settings.max_header_bytes},
            )
        path: str = scope["path"]
        if path.startswith(ADMIN_PREFIX):
            if settings.admin_api_key is None:
                raise Forbidden(
                    "the admin API is disabled: start the server with DIGITSERVE_ADMIN_API_KEY"
                )
            check_key(presented_key(headers), settings.admin_api_key.get_secret_value(), path)
        elif settings.api_key is not None and needs_predict_key(path):
            check_key(presented_key(headers), settings.api_key.get_secret_value(), path)
