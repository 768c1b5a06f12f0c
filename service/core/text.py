"""The text modality: a text (or a text pair) -> the model's token ids, by the manifest's
preprocessing (modelrepo.text, the same code training used), validated before it may join a
batch."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from modelrepo.manifest import Manifest, TextPreprocessing
from modelrepo.text import encode, normalize_text
from service.core.errors import ValidationFailed
from service.core.modality import InputLimits, Modality


class Text(NamedTuple):
    """What a client sends a text model: a text, and a second one for a pair model."""

    text: str
    pair: str | None = None


def _check(field: str, text: str, spec: TextPreprocessing) -> None:
    if len(text) > spec.max_text_chars:
        raise ValidationFailed(
            f"{field} is longer than {spec.max_text_chars} characters",
            detail=[{"field": field, "message": f"at most {spec.max_text_chars} characters"}],
        )
    if not normalize_text(text, lowercase=spec.lowercase).strip():
        raise ValidationFailed(
            f"{field} is empty or only white space",
            detail=[{"field": field, "message": "must contain text"}],
        )


class TextInput(Modality[Text]):
    """Token ids, always padded to the manifest's max_length: the batcher stacks requests into
    one array."""

    kind = "text"
    noun = "text"
    a_model = "a text model"

    def __init__(self, manifest: Manifest) -> None:
        super().__init__(manifest)
        self.spec = manifest.text_preprocessing

    def blank(self, n: int) -> NDArray[np.int64]:
        return np.zeros((n, self.spec.max_length), dtype=np.int64)  # pad tokens

    def tensor_shape(self) -> list[int]:
        """The token axis fixed at `max_length`, as every other way in sends it."""
        shape = super().tensor_shape()
        if len(shape) == 2 and shape[1] == -1:
            shape[1] = self.spec.max_length
        return shape

    @property
    def value_limit(self) -> int:
        return len(self.spec.vocabulary)

    async def to_input(self, payload: Text, limits: InputLimits) -> NDArray[np.int64]:
        """(1, max_length) token ids for one text or pair; 422 for what the model cannot take."""
        key = f"{self.manifest.name}:{self.manifest.version}"
        pair_task = self.manifest.task == "text-pair-classification"
        _check("text", payload.text, self.spec)
        if payload.pair is not None:
            if not pair_task:
                raise ValidationFailed(
                    f"model {key} classifies single texts: leave out text_pair",
                    detail=[{"field": "text_pair", "message": "not accepted by this model"}],
                )
            _check("text_pair", payload.pair, self.spec)
        elif pair_task:
            raise ValidationFailed(
                f"model {key} classifies text pairs: send text_pair too",
                detail=[{"field": "text_pair", "message": "required by this model"}],
            )
        return encode(payload.text, self.spec, payload.pair)[None]
