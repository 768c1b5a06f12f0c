"""A Fashion-MNIST CNN: three 3x3 stride-2 convolutions instead of pooling, then dense 512."""

from __future__ import annotations

import torch
from torch import nn

from training.models.heads import classifier_head
from training.models.registry import register_model


def _strided(size: int) -> int:
    """Output size of a 3x3 conv with stride 2 and padding 1."""
    return (size - 1) // 2 + 1


@register_model("fashion-cnn")
class FashionCNN(nn.Module):
    def __init__(
        self,
        in_channels: int,
        image_size: tuple[int, int],
        num_classes: int,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        h, w = image_size
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, kernel_size=3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, kernel_size=3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(64, 128, kernel_size=3, stride=2, padding=1),
            nn.ReLU(),  # (B, 128, ~H/8, ~W/8)
            nn.Dropout(dropout),
        )
        flat = 128 * _strided(_strided(_strided(h))) * _strided(_strided(_strided(w)))
        self.classifier = classifier_head(flat, 512, num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))  # (B, num_classes) logits
