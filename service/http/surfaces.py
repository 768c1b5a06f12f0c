"""The ways in over HTTP, as the layers in front of the routes must know them.

The API key, the admission gate and BentoML's body limit run before any route, so they tell an
inference request by its path; an error answered there must still read as the way in's own
errors do. Each adapter declares its `Surface` beside its routes (service/http/routes/), and
`SURFACES` lists them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from service.core.errors import ApiError
from service.http.routes import explain, predict, v2


@dataclass(frozen=True)
class Surface:
    """One way in: the paths it owns, which of them run inference, its error body."""

    owns: Callable[[str], bool]
    # An inference path -> the `endpoint` label its requests are counted under (never the
    # client's text); None for the way in's other paths.
    endpoint: Callable[[str], str | None]
    error_body: Callable[[ApiError], dict[str, Any]] = ApiError.body
    # Whether its requests pass the worker's admission gate (and count in its estimate of the
    # time per item); /explain has a concurrency limit of its own instead.
    gated: bool = True


class Surfaces:
    def __init__(self, *surfaces: Surface) -> None:
        self.surfaces = surfaces

    def of(self, path: str) -> Surface | None:
        return next((s for s in self.surfaces if s.owns(path)), None)

    def endpoint(self, path: str) -> str | None:
        """The endpoint label of an inference path, or None when the path runs no inference."""
        surface = self.of(path)
        return surface.endpoint(path) if surface is not None else None

    def error_body(self, exc: ApiError, path: str) -> dict[str, Any]:
        """The error as the way in that owns `path` answers it (the API's shape elsewhere)."""
        surface = self.of(path)
        return surface.error_body(exc) if surface is not None else exc.body()


SURFACES = Surfaces(
    Surface(predict.owns, predict.endpoint),
    Surface(v2.owns, v2.endpoint, v2.error_body),
    Surface(explain.owns, explain.endpoint, gated=False),
)


def needs_predict_key(path: str) -> bool:
    """Inference paths need the predict API key when one is set."""
    return SURFACES.endpoint(path) is not None
