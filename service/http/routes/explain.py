"""POST /explain and /explain/text: what a model saw and what its answer rests on. Each decodes
its body as /predict does and leaves the explanation to the dataplane."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from service.core.errors import BadRequest
from service.core.image import ImageInput
from service.core.models import LoadedModel
from service.core.text import Text, TextInput
from service.http.context import call_of, dataplane_of, expect, json_body
from service.http.forms import form_openapi, predict_form, require_json
from service.http.schemas import ExplainResponse, TextExplainResponse, TextPredictRequest

PREFIX = "/explain"
ENDPOINTS = frozenset({"/explain", "/explain/text"})
ENDPOINT_OF_MODALITY = {"image": "/explain", "text": "/explain/text"}


def owns(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def endpoint(path: str) -> str:
    return path if path in ENDPOINTS else "other"


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
    plane = dataplane_of(request)
    call = call_of(request, "/explain")
    async with predict_form(request, "image", max_files=1) as form:
        if len(form.files) != 1:
            raise BadRequest(
                "send exactly one 'image' part",
                detail={"field": "image", "parts": len(form.files)},
            )
        data = await form.files[0].read()
    o = form.options

    async def work(model: LoadedModel) -> ExplainResponse:
        expect(model, ImageInput, ENDPOINT_OF_MODALITY)
        found = await plane.explain_image(model, data, o.top_k)
        return ExplainResponse.model_validate(
            {**asdict(found), "model": model.name, "version": model.version,
             "latency_ms": call.elapsed_ms()}
        )  # fmt: skip

    return json_body(await plane.serve(call, o.model, o.version, work, queued=False))


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
    plane = dataplane_of(request)
    call = call_of(request, "/explain/text")
    name = body.model or plane.default_for(TextInput)
    text = Text(body.text, body.text_pair)

    async def work(model: LoadedModel) -> TextExplainResponse:
        expect(model, TextInput, ENDPOINT_OF_MODALITY)
        found = await plane.explain_text(model, text, body.top_k)
        return TextExplainResponse.model_validate(
            {**asdict(found), "model": model.name, "version": model.version,
             "latency_ms": call.elapsed_ms()}
        )  # fmt: skip

    return json_body(await plane.serve(call, name, body.version, work, queued=False))
