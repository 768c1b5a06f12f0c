"""Training-time augmentation written with plain torch ops (no torchvision)."""

from __future__ import annotations

import torch

AUGMENTATIONS = ("crop", "flip")


def check_augmentations(names: list[str] | tuple[str, ...]) -> None:
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise ValueError(
            f"unknown augmentation(s) {', '.join(unknown)}; known: {', '.join(AUGMENTATIONS)}"
        )


def random_crop(
    x: torch.Tensor, pad_value: torch.Tensor, padding: int, generator: torch.Generator
) -> torch.Tensor:
    """Pad each image by `padding` with `pad_value` (per channel) and crop back at a random offset.

    `pad_value` is what a black pixel becomes after preprocessing, so padding matches what
    padding the raw image before normalisation would give.
    """
    b, c, h, w = x.shape
    padded = pad_value.view(1, c, 1, 1).expand(b, c, h + 2 * padding, w + 2 * padding).clone()
    padded[:, :, padding : padding + h, padding : padding + w] = x
    offsets = torch.randint(0, 2 * padding + 1, (b, 2), generator=generator)
    rows = offsets[:, 0:1] + torch.arange(h)  # (B, H)
    cols = offsets[:, 1:2] + torch.arange(w)  # (B, W)
    batch = torch.arange(b)[:, None, None]
    # (B, H, W, C) after advanced indexing on the spatial axes, then back to (B, C, H, W)
    return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip each image left-right with probability 1/2."""
    flip = torch.rand(x.shape[0], generator=generator) < 0.5
    out = x.clone()
    out[flip] = x[flip].flip(-1)
    return out


def augment_batch(
    x: torch.Tensor, names: tuple[str, ...], pad_value: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    if "crop" in names:
        x = random_crop(x, pad_value, padding=4, generator=generator)
    if "flip" in names:
        x = random_flip(x, generator)
    return x
