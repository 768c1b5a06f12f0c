"""POST /explain and /explain/text: what a model saw and what its answer rests on. Each decodes
its body as /predict does and leaves the explanation to the dataplane."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from service.core.image import ImageInput
from service.core.modality import Modality
from service.core.models import LoadedModel
from service.core.text import Text, TextInput
from service.http.context import call_of, dataplane_of, expect, json_body
from service.http.forms import form_openapi, one_image, require_json
from service.http.schemas import ExplainResponse, TextExplainResponse, TextPredictRequest

PREFIX = "/explain"
ENDPOINTS = frozenset({"/explain", "/explain/text"})
ENDPOINT_OF_MODALITY = {"image": "/explain", "text": "/explain/text"}


def owns(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def endpoint(path: str) -> str:
    return path if path in ENDPOINTS else "other"


async def explain_one(
    request: Request,
    endpoint: str,
    modality: type[Modality[Any]],
    payload: bytes | Text,
    model_name: str | None,
    version: int | None,
    top_k: int,
) -> Response:
    """One input -> its explanation by the named model, counted; outside the admission gate
    and the per-model queue (the dataplane's explain gate limits it instead)."""
    plane = dataplane_of(request)
    call = call_of(request, endpoint)

    async def work(model: LoadedModel) -> ExplainResponse | TextExplainResponse:
        expect(model, modality, ENDPOINT_OF_MODALITY)
        extra = {"model": model.name, "version": model.version}
        if isinstance(payload, Text):
            text = await plane.explain_text(model, payload, top_k)
            body = {**asdict(text), **extra, "latency_ms": call.elapsed_ms()}
            return TextExplainResponse.model_validate(body)
        image = await plane.explain_image(model, payload, top_k)
        return ExplainResponse.model_validate(
            {**asdict(image), **extra, "latency_ms": call.elapsed_ms()}
        )

    return json_body(await plane.serve(call, model_name, version, work, queued=False))


router = APIRouter(tags=["explain"])


@router.post(
    "/explain",
    response_model=ExplainResponse,
    summary="Classify one uploaded image and show what the model saw",
    description="The predictions as /predict gives them, the input tensor as a picture, each "
    "convolution block's activation maps, the first layer's filters, and an occlusion map: how "
    "much the top class's probability drops when each patch of the input is masked (all the "
    "masked copies run as one batch). Each worker runs a few at once "
    "(DIGITSERVE_EXPLAIN_CONCURRENCY) and answers more with 503 + Retry-After.",
    openapi_extra=form_openapi(
        "image", many=False, description="PNG, JPEG, GIF, BMP or WebP image"
    ),
)
async def explain(request: Request) -> Response:
    data, o = await one_image(request)
    return await explain_one(request, "/explain", ImageInput, data, o.model, o.version, o.top_k)


@router.post(
    "/explain/text",
    response_model=TextExplainResponse,
    dependencies=[Depends(require_json)],
    summary="Classify a text and show how much each token counts",
    description="The predictions as /predict/text gives them, and for each token the model "
    "saw, how much the top class's probability drops when that token is removed (all the "
    "shortened copies run as one batch).",
)
async def explain_text(request: Request, body: TextPredictRequest) -> Response:
    name = body.model or dataplane_of(request).default_for(TextInput)
    text = Text(body.text, body.text_pair)
    return await explain_one(
        request, "/explain/text", TextInput, text, name, body.version, body.top_k
    )
