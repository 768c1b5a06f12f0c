"""The training loop and evaluation: Adam + cross-entropy, seeded and deterministic on CPU."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from training.augment import augment_batch


def seed_everything(seed: int) -> torch.Generator:
    """Seed every RNG that training touches and make torch's CPU kernels deterministic."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    return torch.Generator().manual_seed(seed)


@dataclass(frozen=True)
class Evaluation:
    loss: float
    accuracy: float
    predictions: np.ndarray  # (N,) int64


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Evaluation:
    logits = predict_logits(model, x)
    loss = nn.functional.cross_entropy(logits, y).item()
    predictions = logits.argmax(dim=1)
    accuracy = (predictions == y).float().mean().item()
    return Evaluation(loss=loss, accuracy=accuracy, predictions=predictions.numpy())


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int,
    augment: tuple[str, ...],
    pad_value: torch.Tensor,
    generator: torch.Generator,
    description: str,
    unit: str = "img",
) -> tuple[float, float]:
    """One pass over (x, y) in a seeded random order; returns (mean loss, accuracy)."""
    model.train()
    order = torch.randperm(len(x), generator=generator)
    total_loss, correct, seen = 0.0, 0, 0
    # disable=None: a bar on a terminal, nothing in logs (the caller prints a line per epoch).
    bar = tqdm(total=len(x), desc=description, unit=unit, leave=False, disable=None)
    with bar:
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            xb, yb = x[idx], y[idx]
            if augment:
                xb = augment_batch(xb, augment, pad_value, generator)
            logits = model(xb)
            loss = nn.functional.cross_entropy(logits, yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(idx)
            correct += int((logits.argmax(dim=1) == yb).sum())
            seen += len(idx)
            bar.update(len(idx))
            bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.4f}")
    return total_loss / seen, correct / seen


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    *,
    epochs: int,
    batch_size: int,
    generator: torch.Generator,
    augment: tuple[str, ...] = (),
    pad_value: torch.Tensor | None = None,
    unit: str = "img",
) -> list[dict[str, float]]:
    """`epochs` passes over `train`, each evaluated on `test` and printed as one line; returns
    the per-epoch history (train and test loss and accuracy)."""
    history: list[dict[str, float]] = []
    for epoch in range(1, epochs + 1):
        train_loss, train_acc = train_one_epoch(
            model,
            optimizer,
            *train,
            batch_size=batch_size,
            augment=augment,
            pad_value=torch.zeros(0) if pad_value is None else pad_value,
            generator=generator,
            description=f"epoch {epoch}/{epochs}",
            unit=unit,
        )
        result = evaluate(model, *test)
        history.append(
            {
                "epoch": epoch,
                "train_loss": train_loss,
                "train_accuracy": train_acc,
                "test_loss": result.loss,
                "test_accuracy": result.accuracy,
            }
        )
        print(
            f"epoch {epoch}/{epochs}: train loss {train_loss:.4f} acc {train_acc:.4f} | "
            f"test loss {result.loss:.4f} acc {result.accuracy:.4f}",
            flush=True,
        )
    return history


def confusion_matrix(true: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """matrix[t, p] = number of samples of class t predicted as p."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (true, pred), 1)
    return matrix
