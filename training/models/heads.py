"""Layers shared by the model families."""

from __future__ import annotations

from torch import nn


def classifier_head(
    in_features: int, hidden: int, num_classes: int, dropout: float
) -> nn.Sequential:
    """flatten -> dense `hidden` + ReLU -> dropout -> dense `num_classes` (logits)."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_features, hidden),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, num_classes),
    )
