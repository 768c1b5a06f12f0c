"""Text requests -> the model's token ids, by the manifest's preprocessing (modelrepo.text,
the same code training used), validated before they may join a batch."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from modelrepo.manifest import TextPreprocessing
from modelrepo.text import encode, normalize_text
from service.errors import ValidationFailed
from service.models import LoadedModel


def text_spec(model: LoadedModel) -> TextPreprocessing:
    """The model's text preprocessing, or 422 when it classifies images."""
    spec = model.manifest.preprocessing
    if not isinstance(spec, TextPreprocessing):
        raise ValidationFailed(
            f"model {model.key} classifies images: send images to /predict",
            detail=[{"field": "model", "message": "not a text model", "value": model.name}],
        )
    return spec


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


def text_to_input(model: LoadedModel, text: str, text_pair: str | None) -> NDArray[np.int64]:
    """(1, max_length) token ids for one text or pair; 422 for what the model cannot take."""
    spec = text_spec(model)
    pair_task = model.manifest.task == "text-pair-classification"
    _check("text", text, spec)
    if text_pair is not None:
        if not pair_task:
            raise ValidationFailed(
                f"model {model.key} classifies single texts: leave out text_pair",
                detail=[{"field": "text_pair", "message": "not accepted by this model"}],
            )
        _check("text_pair", text_pair, spec)
    elif pair_task:
        raise ValidationFailed(
            f"model {model.key} classifies text pairs: send text_pair too",
            detail=[{"field": "text_pair", "message": "required by this model"}],
        )
    return encode(text, spec, text_pair)[None]
