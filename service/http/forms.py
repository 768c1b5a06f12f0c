"""The multipart forms of the prediction endpoints: parsed once by Starlette, their option
fields validated by one pydantic model whose JSON schema also documents the body in OpenAPI.

FastAPI's per-parameter form handling (dependency solving, one validation per field) cost
about a sixth of a worker's CPU per request in the profile; this does the same checks once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request

from service.core.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType, ValidationFailed


class PredictOptions(BaseModel):
    """The form fields beside the image(s)."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(
        None, max_length=64, description="model name; default: the default model",
        examples=["digits-cnn"],
    )  # fmt: skip
    version: int | None = Field(
        None, ge=1, description="model version; default: the highest loaded", examples=[1]
    )
    top_k: int = Field(3, ge=1, description="how many classes to return (1..classes)",
                       examples=[3])  # fmt: skip


@dataclass
class PredictForm:
    files: list[UploadFile]
    options: PredictOptions


def form_field_schema(field: dict[str, Any]) -> dict[str, Any]:
    """A PredictOptions field as a form documents it: a form part cannot be null (an optional
    field is left out), so `anyOf: [X, {"type": "null"}]` becomes X."""
    choices = [c for c in field.get("anyOf", []) if c != {"type": "null"}]
    if len(choices) != 1:
        return field
    return {**{k: v for k, v in field.items() if k != "anyOf"}, **choices[0]}


def form_openapi(file_field: str, *, many: bool, description: str) -> dict[str, Any]:
    """`openapi_extra` documenting a multipart body: the file part(s) and PredictOptions."""
    binary: dict[str, Any] = {"type": "string", "format": "binary"}
    file_schema = {"type": "array", "items": binary, "minItems": 1} if many else binary
    options = PredictOptions.model_json_schema()["properties"]
    schema = {
        "type": "object",
        "required": [file_field],
        "properties": {
            file_field: {**file_schema, "description": description},
            **{name: form_field_schema(field) for name, field in options.items()},
        },
    }
    return {
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}
    }


def validation_problems(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"field": ".".join(str(p) for p in err["loc"]) or None, "message": err["msg"]}
        for err in exc.errors()
    ]


# RFC 2046: a boundary is 1 to 70 characters.
MAX_BOUNDARY = 70


def check_boundary(content_type: str) -> None:
    """400 for a multipart body whose boundary is missing, empty or longer than RFC 2046
    allows (an empty one made every line of the body a delimiter candidate)."""
    params = dict(
        (key.strip().lower(), value.strip().strip('"'))
        for key, _, value in (p.partition("=") for p in content_type.split(";")[1:])
    )
    boundary = params.get("boundary", "")
    if not 1 <= len(boundary) <= MAX_BOUNDARY:
        raise BadRequest(
            "malformed multipart body: the boundary must be 1 to 70 characters",
            detail={"boundary_length": len(boundary), "limit": MAX_BOUNDARY},
        )


@asynccontextmanager
async def predict_form(request: Request, file_field: str, *, max_files: int
                       ) -> AsyncIterator[PredictForm]:  # fmt: skip
    """Parse and check the form; its uploaded files are closed when the block ends."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        raise UnsupportedMediaType(
            "the body must be multipart/form-data",
            detail={"field": file_field, "content_type": request.headers.get("content-type")},
        )
    if content_type.startswith("multipart/form-data"):
        check_boundary(content_type)
    try:
        form = await request.form(max_files=max_files + 1, max_fields=100)
    except (MultiPartException, HTTPException) as exc:
        # Starlette reports parse errors as MultiPartException, or as a 400 HTTPException
        # when it runs inside an app.
        reason = exc.message if isinstance(exc, MultiPartException) else str(exc.detail)
        if "Too many files" in reason and max_files == 1:
            # The same mistake as two parts, which the endpoint answers itself: the same 400.
            raise BadRequest(
                f"send exactly one {file_field!r} part; use /predict/batch for several",
                detail={"field": file_field, "limit": 1},
            ) from None
        if "Too many files" in reason:
            raise PayloadTooLarge(f"at most {max_files} image(s) per request",
                                  detail={"limit": max_files}) from None  # fmt: skip
        raise BadRequest("malformed multipart body", detail={"reason": reason}) from None
    try:
        parts = form.getlist(file_field)
        if not parts:
            raise ValidationFailed(detail=[{"field": file_field, "message": "Field required"}])
        if not all(isinstance(part, UploadFile) for part in parts):
            raise ValidationFailed(
                detail=[{"field": file_field, "message": "must be a file part, not a text field"}]
            )
        values = {k: v for k in PredictOptions.model_fields if isinstance(v := form.get(k), str)}
        try:
            options = PredictOptions.model_validate(values)
        except ValidationError as exc:
            raise ValidationFailed(detail=validation_problems(exc)) from None
        yield PredictForm(files=[p for p in parts if isinstance(p, UploadFile)], options=options)
    finally:
        await form.close()


async def require_json(request: Request) -> None:
    """A dependency of the JSON endpoints: 415 for a body not declared JSON (FastAPI would
    validate its raw bytes as the model and answer a puzzling 422 with no field named)."""
    content_type = request.headers.get("content-type")
    media_type = (content_type or "").partition(";")[0].strip().lower()
    kind, _, subtype = media_type.partition("/")
    if kind != "application" or not (subtype == "json" or subtype.endswith("+json")):
        raise UnsupportedMediaType(
            "the body must be application/json",
            detail={"content_type": content_type},
        )


async def one_image(
    request: Request, *, several: str | None = None
) -> tuple[bytes, PredictOptions]:
    """The single `image` part of a form and its options; 400 for none or several (`several`
    names the endpoint that takes several, for the message)."""
    async with predict_form(request, "image", max_files=1) as form:
        if len(form.files) != 1:
            hint = f"; use {several} for several" if several else ""
            raise BadRequest(
                f"send exactly one 'image' part{hint}",
                detail={"field": "image", "parts": len(form.files)},
            )
        return await form.files[0].read(), form.options
