"""Liveness and readiness, as Kubernetes probes them."""

from __future__ import annotations

from fastapi import APIRouter, Request

from service.core.errors import ServiceUnavailable
from service.http.context import dataplane_of
from service.http.schemas import HealthResponse, ReadyResponse

router = APIRouter(tags=["health"])


@router.get("/livez", response_model=HealthResponse, summary="Liveness: the process answers")
async def livez() -> HealthResponse:
    return HealthResponse(status="ok")


@router.get(
    "/readyz",
    response_model=ReadyResponse,
    summary="Readiness: every configured model is loaded and warmed",
)
async def readyz(request: Request) -> ReadyResponse:
    runtime = dataplane_of(request).runtime  # 503 + Retry-After until ready
    reason = runtime.not_ready_reason()
    if reason is not None:
        raise ServiceUnavailable(
            f"not ready: {reason['reason']}", detail={"ready": False, **reason}
        )
    return ReadyResponse(ready=True, models=[m.key for m in runtime.models])
