"""An LSTM image classifier that reads the image row by row: each row is one time step."""

from __future__ import annotations

import torch
from torch import nn

from training.models.registry import register_model


@register_model("row-lstm")
class RowLSTM(nn.Module):
    def __init__(
        self,
        in_channels: int,
        image_size: tuple[int, int],
        num_classes: int,
        hidden_size: int = 128,
        num_layers: int = 1,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        _, w = image_size
        self.lstm = nn.LSTM(
            input_size=in_channels * w,
            hidden_size=hidden_size,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        rows = x.permute(0, 2, 1, 3).reshape(b, h, c * w)  # (B, H, C*W): one row per step
        out, _ = self.lstm(rows)  # (B, H, hidden)
        return self.head(self.dropout(out[:, -1]))  # (B, num_classes) logits from the last row
