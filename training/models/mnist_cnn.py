"""The classic MNIST CNN: two 5x5 conv layers with max-pooling, one dense layer."""

from __future__ import annotations

import torch
from torch import nn

from training.models.heads import classifier_head
from training.models.registry import register_model


@register_model("mnist-cnn")
class MnistCNN(nn.Module):
    def __init__(
        self,
        in_channels: int,
        image_size: tuple[int, int],
        num_classes: int,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        h, w = image_size
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),  # (B, 32, H/2, W/2)
            nn.Conv2d(32, 64, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),  # (B, 64, H/4, W/4)
        )
        flat = 64 * (h // 4) * (w // 4)
        if flat == 0:
            raise ValueError(f"mnist-cnn needs images of at least 4x4 pixels, got {h}x{w}")
        self.classifier = classifier_head(flat, 256, num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))  # (B, num_classes) logits
