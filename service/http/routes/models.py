"""GET /models: what this worker serves, with each version's manifest summary."""

from __future__ import annotations

from fastapi import APIRouter, Request

from service.http.context import dataplane_of
from service.http.schemas import ModelInfo, ModelsResponse

router = APIRouter(tags=["models"])


@router.get(
    "/models",
    response_model=ModelsResponse,
    summary="Loaded models and versions with their manifests' summaries",
)
async def list_models(request: Request) -> ModelsResponse:
    registry = dataplane_of(request).runtime.models
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
