"""The REST prediction endpoints: an image as multipart or base64 JSON, several images, a text.
Each decodes its body, names the modality it sends, and leaves the rest to the dataplane."""

from __future__ import annotations

import base64
import binascii
import time
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from service.core.dataplane import check_top_k
from service.core.errors import ApiError, BadRequest, PayloadTooLarge
from service.core.image import ImageInput
from service.core.modality import Modality
from service.core.models import LoadedModel
from service.core.postprocess import top_k as rank
from service.core.text import Text, TextInput
from service.http.context import call_of, dataplane_of, expect, json_body
from service.http.forms import form_openapi, one_image, predict_form, require_json
from service.http.schemas import (
    BatchPredictResponse,
    ImageResult,
    JsonPredictRequest,
    PredictResponse,
    TextPredictRequest,
)

PREFIX = "/predict"
ENDPOINTS = frozenset({"/predict", "/predict/json", "/predict/batch", "/predict/text"})
# Where a model of each modality is sent, for the 422 that names the right endpoint.
ENDPOINT_OF_MODALITY = {"image": "/predict", "text": "/predict/text"}


def expect_input(model: LoadedModel, modality: type[Modality[Any]]) -> None:
    expect(model, modality, ENDPOINT_OF_MODALITY)


def owns(path: str) -> bool:
    return path.startswith(PREFIX)


def endpoint(path: str) -> str:
    """Every /predict... path runs inference (so needs the key); one that is no endpoint is
    counted as "other"."""
    return path if path in ENDPOINTS else "other"


async def predict_one(
    request: Request,
    endpoint: str,
    modality: type[Modality[Any]],
    payload: object,
    model_name: str | None,
    version: int | None,
    top_k: int,
) -> Response:
    """One input (an image or a text) -> the named model's top_k classes, counted and batched."""
    plane = dataplane_of(request)
    call = call_of(request, endpoint)

    async def work(model: LoadedModel) -> PredictResponse:
        check_top_k(top_k, model)
        expect_input(model, modality)
        return PredictResponse(
            model=model.name,
            version=model.version,
            predictions=await plane.classify(call, model, payload, top_k),
            latency_ms=call.elapsed_ms(),
        )

    return json_body(await plane.serve(call, model_name, version, work))


router = APIRouter(tags=["predict"])


@router.post(
    "/predict",
    response_model=PredictResponse,
    summary="Classify one uploaded image",
    openapi_extra=form_openapi(
        "image", many=False, description="PNG, JPEG, GIF, BMP or WebP image"
    ),
)
async def predict(request: Request) -> Response:
    data, o = await one_image(request, several="/predict/batch")
    return await predict_one(request, "/predict", ImageInput, data, o.model, o.version, o.top_k)


@router.post(
    "/predict/json",
    response_model=PredictResponse,
    summary="Classify one base64-encoded image sent as JSON",
    dependencies=[Depends(require_json)],  # 415 for a body that is not JSON
)
async def predict_json(request: Request, body: JsonPredictRequest) -> Response:
    try:
        data = base64.b64decode(body.image_base64, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(
            "image_base64 is not valid base64", detail={"field": "image_base64"}
        ) from None
    return await predict_one(
        request, "/predict/json", ImageInput, data, body.model, body.version, body.top_k
    )


@router.post(
    "/predict/text",
    response_model=PredictResponse,
    dependencies=[Depends(require_json)],
    summary="Classify a text (or a text pair) with a text model",
    description="Tokenized exactly as in training (the manifest carries the vocabulary, "
    "max length and rules); batched with other text requests to the same model.",
)
async def predict_text(request: Request, body: TextPredictRequest) -> Response:
    name = body.model or dataplane_of(request).default_for(TextInput)
    text = Text(body.text, body.text_pair)
    return await predict_one(
        request, "/predict/text", TextInput, text, name, body.version, body.top_k
    )


@router.post(
    "/predict/batch",
    response_model=BatchPredictResponse,
    summary="Classify several uploaded images in one request",
    openapi_extra=form_openapi(
        "images", many=True, description="several images, each a part named 'images'"
    ),
)
async def predict_batch(request: Request) -> Response:
    plane = dataplane_of(request)
    limit = plane.runtime.settings.max_batch_images
    async with predict_form(request, "images", max_files=limit) as form:
        if len(form.files) > limit:
            raise PayloadTooLarge(
                f"at most {limit} images per request",
                detail={"images": len(form.files), "limit": limit},
            )
        uploads = [(f.filename, await f.read()) for f in form.files]
    top_k = form.options.top_k
    call = call_of(request, "/predict/batch")

    async def work(model: LoadedModel) -> BatchPredictResponse:
        check_top_k(top_k, model)
        expect_input(model, ImageInput)
        inputs = []
        for i, (filename, data) in enumerate(uploads):
            try:
                inputs.append(await plane.to_input(model, data, call))
            except ApiError as exc:
                exc.detail = {
                    "image": i,
                    "filename": filename,
                    **(exc.detail if isinstance(exc.detail, dict) else {}),
                }
                raise
        logits = await plane.infer(call, model, np.concatenate(inputs))
        started = time.perf_counter()
        results = [
            ImageResult(
                index=i, filename=filename, predictions=rank(row, model.manifest.labels, top_k)
            )
            for i, ((filename, _), row) in enumerate(zip(uploads, logits, strict=True))
        ]
        call.stages.output_since(started)
        return BatchPredictResponse(
            model=model.name, version=model.version, results=results, latency_ms=call.elapsed_ms()
        )

    return json_body(await plane.serve(call, form.options.model, form.options.version, work))
