"""A kind of model input (the manifest's `preprocessing.kind`): what the service must know of it,
whatever protocol brought the request.

Each modality is one class in a file of its own (service/core/image.py, service/core/text.py),
listed in service/core/modalities.py: its blank input for warm-up, the tensor shape a protocol
request sends, the limits on its values, and the conversion of what a client sends (the
`Payload`: image bytes, a text) into the model's input tensor.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar

import numpy as np
from numpy.typing import NDArray

from modelrepo.manifest import Manifest

Payload = TypeVar("Payload")


@dataclass(frozen=True)
class InputLimits:
    """What a worker allows one input to cost (from the settings), and where costly image
    decoding runs."""

    max_bytes: int
    max_pixels: int
    decoder: Executor | None = None


class Modality(ABC, Generic[Payload]):
    """One model version's input, described by its manifest."""

    kind: ClassVar[str]  # the manifest's preprocessing.kind
    noun: ClassVar[str]  # what its models classify, in messages: "images", "text"
    a_model: ClassVar[str]  # "an image model", "a text model"

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest

    @abstractmethod
    def blank(self, n: int) -> NDArray[np.generic]:
        """A batch of `n` neutral inputs, shaped as requests reach the batcher (warm-up)."""

    def tensor_shape(self) -> list[int]:
        """The input tensor's shape as a protocol request sends it: the first axis is the batch,
        -1 any size."""
        return list(self.manifest.input.shape)

    @property
    def value_limit(self) -> int | None:
        """Values must be below this (token ids), or None: an out-of-range value would fail
        the onnxruntime call of the whole batch, not only its own request."""
        return None

    @property
    def canonicalisation(self) -> str:
        """How the preprocessing canonicalises an input (the model info gauge's label)."""
        return "none"

    @abstractmethod
    async def to_input(self, payload: Payload, limits: InputLimits) -> NDArray[np.generic]:
        """What a client sent -> the model's (1, ...) input, validated (4xx errors otherwise)."""
