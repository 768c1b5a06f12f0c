"""A small VGG for CIFAR-10: three blocks of two 3x3 convs (+BatchNorm) and max-pooling.

Trained with random crop (padding 4) and horizontal flip; see training.augment.
"""

from __future__ import annotations

import torch
from torch import nn

from training.models.heads import classifier_head
from training.models.registry import register_model


def _block(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(),
        nn.Conv2d(out_ch, out_ch, kernel_size=3, padding=1),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )


@register_model("cifar-vgg", augment=("crop", "flip"))
class CifarVGG(nn.Module):
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
            _block(in_channels, 32),  # (B, 32, H/2, W/2)
            _block(32, 64),  # (B, 64, H/4, W/4)
            _block(64, 128),  # (B, 128, H/8, W/8)
        )
        flat = 128 * (h // 8) * (w // 8)
        if flat == 0:
            raise ValueError(f"cifar-vgg needs images of at least 8x8 pixels, got {h}x{w}")
        self.classifier = classifier_head(flat, 1024, num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))  # (B, num_classes) logits
