"""Logits -> ranked predictions, the answer every way in gives."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field


class Prediction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: str = Field(description="class name from the model's manifest", examples=["7"])
    index: int = Field(ge=0, description="class index in the model's output", examples=[7])
    probability: float = Field(ge=0, le=1, description="softmax probability", examples=[0.993])


def softmax(logits: NDArray[np.float32]) -> NDArray[np.float64]:
    """Row-wise softmax in float64, stable for large logits."""
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    return z


def top_k(logits: NDArray[np.float32], labels: Sequence[str], k: int) -> list[Prediction]:
    """The k most probable classes of one image's logits, most probable first; ties keep the
    lower class index first, so the answer is deterministic."""
    if logits.ndim != 1 or len(logits) != len(labels):
        raise ValueError(f"expected {len(labels)} logits, got shape {logits.shape}")
    probabilities = softmax(logits[None])[0]
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [
        Prediction(label=labels[i], index=int(i), probability=float(probabilities[i]))
        for i in order
    ]
