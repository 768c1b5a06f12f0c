"""What an HTTP handler needs from its request: the worker's dataplane (503 until it is ready),
the request as a dataplane `Call`, and the 422 for a model of the wrong kind."""

from __future__ import annotations

import time
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel

from service.core.dataplane import Call, DataPlane, not_ready
from service.core.errors import ValidationFailed
from service.core.modality import Modality
from service.core.models import LoadedModel


def dataplane_of(request: Request) -> DataPlane:
    plane: DataPlane | None = getattr(request.app.state, "dataplane", None)
    if plane is None or not plane.ready:
        raise not_ready()
    return plane


def arrival(request: Request) -> float:
    """When the request's body had arrived (AdmissionMiddleware; for other requests when their
    headers had), as perf_counter, or now."""
    received: float | None = getattr(request.state, "received", None)
    return received if received is not None else time.perf_counter()


def call_of(request: Request, endpoint: str) -> Call:
    """The request as the dataplane sees it: its endpoint label, arrival and admission ticket."""
    return Call(endpoint, arrival(request), getattr(request.state, "admission", None))


def json_body(body: BaseModel) -> Response:
    """A response model as a ready JSON response: FastAPI passes a Response through as it is,
    without validating and encoding the model a second time (response_model documents it)."""
    return Response(body.model_dump_json(), media_type="application/json")


def expect(
    model: LoadedModel,
    modality: type[Modality[Any]],
    endpoint_of_modality: dict[str, str],
) -> None:
    """422 when the model takes another kind of input than this endpoint sends; the message
    names the endpoint for the model's kind (`endpoint_of_modality`)."""
    actual = model.input
    if not isinstance(actual, modality):
        raise ValidationFailed(
            f"model {model.key} classifies {actual.noun}: send {actual.noun} to "
            f"{endpoint_of_modality[actual.kind]}",
            detail=[{"field": "model", "message": f"not {modality.a_model}", "value": model.name}],
        )
