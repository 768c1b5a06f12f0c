"""What a model makes of one input, for /explain: the input as the model saw it, each
convolution block's activation maps, the first layer's filters, and how much the top class's
probability drops when each part of the input is masked (images) or each token is removed
(text).

The masked copies go through the model's batcher as one batch, beside the unmasked input, so
the predictions are the ones /predict gives. Activations come from the graph's extra outputs
(the manifest's `explain`), asked for only here. Explaining costs tens of inferences, so each
worker runs at most `explain_concurrency` at once and refuses more at once (503), and none of
it passes through the predict admission gate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from modelrepo.manifest import ExplainOutputs
from modelrepo.text import tokenize, truncate_pair
from service.core import pictures
from service.core.admission import Overloaded
from service.core.image import ImageInput
from service.core.models import LoadedModel
from service.core.postprocess import Prediction, softmax, top_k
from service.core.runtime import Runtime
from service.core.text import Text, TextInput

# Digits are drawn bolder than a quarter of the canvas only rarely: a patch that size hides a
# stroke's part without hiding the whole digit. Half-patch steps give each pixel 2-4 patches.
PATCH_SHARE = 4
GRID_DECIMALS = 6


class ExplainGate:
    """At most `limit` explanations at once in this worker; more are refused, not queued."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.running = 0

    @contextmanager
    def enter(self) -> Iterator[None]:
        if self.running >= self.limit:
            raise Overloaded(
                "explain_busy",
                f"busy: {self.limit} /explain requests are already running in this worker",
                running=self.running,
                limit=self.limit,
            )
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1


@dataclass(frozen=True)
class Activation:
    layer: str
    shape: list[int]
    png: str


@dataclass(frozen=True)
class Occlusion:
    png: str
    grid: list[list[float]]
    patch: int
    stride: int


@dataclass(frozen=True)
class ImageExplanation:
    predictions: list[Prediction]
    input_png: str
    activations: list[Activation]
    filters_png: str | None
    occlusion: Occlusion


@dataclass(frozen=True)
class TokenDrop:
    token: str
    part: str  # "text" or "text_pair"
    drop: float


@dataclass(frozen=True)
class TextExplanation:
    predictions: list[Prediction]
    tokens: list[TokenDrop]


def occlusion_geometry(size: tuple[int, int]) -> tuple[int, int]:
    """The mask's side and step for an input of `size` (height, width)."""
    patch = max(1, min(size) // PATCH_SHARE)
    return patch, max(1, patch // 2)


def positions(length: int, patch: int, stride: int) -> int:
    """How many patch positions fit along an axis (the last one flush with the edge or short
    of it by less than a stride)."""
    return (length - patch) // stride + 1


def occluded_copies(
    x: NDArray[np.float32], patch: int, stride: int, fill: NDArray[np.float32]
) -> NDArray[np.float32]:
    """One (C, H, W) input -> (rows * cols, C, H, W) copies, each with one patch set to `fill`
    (C,), row by row."""
    _, height, width = x.shape
    rows, cols = positions(height, patch, stride), positions(width, patch, stride)
    copies = np.repeat(x[None], rows * cols, axis=0)
    for i, (r, c) in enumerate(np.ndindex(rows, cols)):
        y0, x0 = r * stride, c * stride
        copies[i, :, y0 : y0 + patch, x0 : x0 + patch] = fill[:, None, None]
    return copies


def token_removals(ids: NDArray[np.int64], where: list[int], pad_id: int) -> NDArray[np.int64]:
    """One (T,) id sequence -> (len(where), T) copies, each without one of the ids at `where`
    (the rest moved up and padded at the end, as a text without that token encodes)."""
    out = np.full((len(where), len(ids)), pad_id, dtype=np.int64)
    for row, i in enumerate(where):
        rest = np.delete(ids, i)
        out[row, : len(rest)] = rest
    return out


def rounded(values: NDArray[np.floating]) -> list[list[float]]:
    return [[round(float(v), GRID_DECIMALS) + 0.0 for v in row] for row in values]  # no -0.0


class Explainer:
    """One worker's explanations: its gate, and the filters of each model, read once."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.gate = ExplainGate(runtime.settings.explain_concurrency)
        self._filters: dict[str, str | None] = {}

    async def image(self, model: LoadedModel, x: NDArray[np.float32], k: int) -> ImageExplanation:
        """Explain one preprocessed (1, C, H, W) image."""
        spec = model.input.spec if isinstance(model.input, ImageInput) else None
        if spec is None:
            raise TypeError(f"{model.key} is not an image model")
        patch, stride = occlusion_geometry(spec.size)
        # Masked patches read as blank paper: what a black pixel becomes after preprocessing
        # (inversion, where the manifest asks for it, comes before this scaling).
        fill = ((0.0 - np.asarray(spec.mean)) / np.asarray(spec.std)).astype(np.float32)
        copies = occluded_copies(x[0], patch, stride, fill)
        explain = model.manifest.explain
        logits, activations = await asyncio.gather(
            self.runtime.batcher(model).infer(np.concatenate([x, copies])),
            self._activations(model, x, explain),
        )
        probabilities = softmax(logits)
        top = int(np.argmax(probabilities[0]))
        rows = positions(spec.size[0], patch, stride)
        drops = (probabilities[0, top] - probabilities[1:, top]).reshape(rows, -1)
        seen = pictures.seen_input(x[0], spec)
        heat = pictures.occlusion_map(drops, spec.size, patch, stride)
        return ImageExplanation(
            predictions=top_k(logits[0], model.manifest.labels, k),
            input_png=pictures.png_base64(seen),
            activations=activations,
            filters_png=await self._filters_png(model),
            occlusion=Occlusion(
                png=pictures.png_base64(pictures.heat_overlay(seen, heat)),
                grid=rounded(drops),
                patch=patch,
                stride=stride,
            ),
        )

    async def _activations(
        self, model: LoadedModel, x: NDArray[np.float32], explain: ExplainOutputs | None
    ) -> list[Activation]:
        if explain is None or not explain.activations:
            return []
        names = [a.name for a in explain.activations]
        maps = await asyncio.to_thread(model.outputs, names, x)  # off the event loop
        return [
            Activation(layer=a.layer, shape=a.shape, png=pictures.png_base64(
                pictures.channel_grid(m[0])))
            for a, m in zip(explain.activations, maps, strict=True)
        ]  # fmt: skip

    async def _filters_png(self, model: LoadedModel) -> str | None:
        """The first convolution's weights as a grid; read from the graph once per model."""
        if model.key not in self._filters:
            explain = model.manifest.explain
            if explain is None or explain.filters is None:
                self._filters[model.key] = None
            else:
                blank = model.input.blank(1)
                (weights,) = await asyncio.to_thread(model.outputs, [explain.filters.name], blank)
                self._filters[model.key] = pictures.png_base64(pictures.filter_grid(weights))
        return self._filters[model.key]

    async def text(
        self, model: LoadedModel, ids: NDArray[np.int64], payload: Text, k: int
    ) -> TextExplanation:
        """Explain one encoded (1, T) text: each token the model saw, removed in turn."""
        if not isinstance(model.input, TextInput):
            raise TypeError(f"{model.key} is not a text model")
        spec = model.input.spec
        first = tokenize(payload.text, spec)
        second = tokenize(payload.pair, spec) if payload.pair is not None else []
        if payload.pair is None:
            first = first[: spec.max_length]
            seen = [(t, "text", i) for i, t in enumerate(first)]
        else:
            first, second = truncate_pair(first, second, spec.max_length - 1)
            seen = [(t, "text", i) for i, t in enumerate(first)]
            seen += [(t, "text_pair", len(first) + 1 + i) for i, t in enumerate(second)]
        copies = token_removals(ids[0], [i for _, _, i in seen], spec.pad_id)
        logits = await self.runtime.batcher(model).infer(np.concatenate([ids, copies]))
        probabilities = softmax(logits)
        top = int(np.argmax(probabilities[0]))
        drops = probabilities[0, top] - probabilities[1:, top]
        return TextExplanation(
            predictions=top_k(logits[0], model.manifest.labels, k),
            tokens=[
                TokenDrop(token=token, part=part, drop=round(float(drop), GRID_DECIMALS) + 0.0)
                for (token, part, _), drop in zip(seen, drops, strict=True)
            ],
        )
