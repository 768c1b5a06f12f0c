"""A bidirectional-LSTM text classifier over token ids (see modelrepo.text for the encoding)."""

from __future__ import annotations

import torch
from torch import nn

from training.models.registry import register_model


@register_model("bilstm-text", modality="text")
class BiLSTMText(nn.Module):
    """Embedding -> BiLSTM(64) over the whole sequence -> BiLSTM(32), whose final forward and
    backward states are concatenated -> dense 64 + ReLU -> dropout -> logits."""

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        embedding_dim: int = 64,
        hidden_size: int = 64,
        second_hidden_size: int = 32,
        dense: int = 64,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        # padding_idx=0: the pad id's vector stays zero and gets no gradient.
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        self.lstm1 = nn.LSTM(embedding_dim, hidden_size, batch_first=True, bidirectional=True)
        self.lstm2 = nn.LSTM(
            2 * hidden_size, second_hidden_size, batch_first=True, bidirectional=True
        )
        self.head = nn.Sequential(
            nn.Linear(2 * second_hidden_size, dense),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(dense, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        embedded = self.embedding(x)  # (B, T) int64 -> (B, T, E)
        sequence, _ = self.lstm1(embedded)  # (B, T, 2 * hidden)
        _, (final, _) = self.lstm2(sequence)  # final: (2, B, second_hidden), forward first
        both = torch.cat([final[0], final[1]], dim=1)  # (B, 2 * second_hidden)
        return self.head(both)  # (B, num_classes) logits
