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

from service.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType, ValidationFailed


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


def form_openapi(file_field: str, *, many: bool, description: str) -> dict[str, Any]:
    """`openapi_extra` documenting a multipart body: the file part(s) and PredictOptions."""
    binary: dict[str, Any] = {"type": "string", "format": "binary"}
    file_schema = {"type": "array", "items": binary} if many else binary
    schema = {
        "type": "object",
        "required": [file_field],
        "properties": {
            file_field: {**file_schema, "description": description},
            **PredictOptions.model_json_schema()["properties"],
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
    try:
        form = await request.form(max_files=max_files + 1, max_fields=100)
    except (MultiPartException, HTTPException) as exc:
        # Starlette reports parse errors as MultiPartException, or as a 400 HTTPException
        # when it runs inside an app.
        reason = exc.message if isinstance(exc, MultiPartException) else str(exc.detail)
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
