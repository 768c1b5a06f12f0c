"""Admin endpoints (always behind DIGITSERVE_ADMIN_API_KEY): reload the model repository."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from service.http.context import dataplane_of

router = APIRouter(prefix="/admin", tags=["admin"])


class ReloadResponse(BaseModel):
    model_config = ConfigDict(extra="forbid")

    loaded: list[str] = Field(
        description="versions this worker loaded, warmed and switched to", examples=[["m:2"]]
    )
    failed: dict[str, str] = Field(
        description="versions refused (bad sha256, unloadable graph, ...) and why; the "
        "versions already served keep serving",
        examples=[{}],
    )
    models: list[str] = Field(description="what this worker serves now", examples=[["m:1", "m:2"]])
    generation: int = Field(
        description="reload request number; the other workers follow within a second", ge=0
    )


@router.post(
    "/reload",
    response_model=ReloadResponse,
    summary="Load new versions from the model repository, in every worker",
    description="Loads, checks (sha256, graph vs manifest), warms and then switches to every "
    "version added to the repository since start-up. This worker reloads before answering; "
    "the others follow within a second. Needs the admin API key.",
)
async def reload(request: Request) -> ReloadResponse:
    runtime = dataplane_of(request).runtime
    generation = runtime.roster.request_reload()
    runtime.note_reload_generation(generation)  # this worker reloads here, not again
    result = await runtime.reload()
    return ReloadResponse(
        loaded=result.loaded,
        failed=result.failed,
        models=[m.key for m in runtime.models],
        generation=generation,
    )
