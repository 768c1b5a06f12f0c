"""Training-time augmentation written with plain torch ops (no torchvision). Every random
draw comes from the run's seeded generator, so a seed gives the same augmented batches."""

from __future__ import annotations

import torch
import torch.nn.functional as F

AUGMENTATIONS = ("crop", "flip", "affine", "stroke")
# A handwritten digit's variation after canonicalisation: small turns, a little over- or
# under-size, off-centre by a pixel or two, slanted.
MAX_ROTATION_DEG = 12.0
SCALE_RANGE = (0.9, 1.1)
MAX_SHIFT = 0.08  # of the half-width (affine_grid's [-1, 1] coordinates): ~1 px of 28
MAX_SHEAR_DEG = 10.0


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


def uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def random_affine(
    x: torch.Tensor, pad_value: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Each image rotated, scaled, shifted and sheared by a small random amount (bilinear);
    what comes in from outside is `pad_value`, a black pixel after preprocessing."""
    b, c = x.shape[:2]
    angle = torch.deg2rad(uniform(b, -MAX_ROTATION_DEG, MAX_ROTATION_DEG, generator))
    shear = torch.deg2rad(uniform(b, -MAX_SHEAR_DEG, MAX_SHEAR_DEG, generator))
    scale = uniform(b, *SCALE_RANGE, generator)
    shift = uniform(2 * b, -MAX_SHIFT, MAX_SHIFT, generator).view(b, 2)
    cos, sin, tan = torch.cos(angle), torch.sin(angle), torch.tan(shear)
    # affine_grid maps output coordinates to input ones: the inverse of rotate . shear . scale
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = cos / scale
    theta[:, 0, 1] = (sin + cos * tan) / scale
    theta[:, 1, 0] = -sin / scale
    theta[:, 1, 1] = (cos - sin * tan) / scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    pad = pad_value.view(1, c, 1, 1)
    moved = F.grid_sample(x - pad, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return moved + pad


def random_stroke(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A third of the images with thicker strokes, a third with thinner ones (half-strength
    grey dilation or erosion), as pens and scanners differ. Ink is the bright side."""
    choice = torch.randint(0, 3, (x.shape[0],), generator=generator)
    thick = 0.5 * (x + F.max_pool2d(x, 3, stride=1, padding=1))
    thin = 0.5 * (x - F.max_pool2d(-x, 3, stride=1, padding=1))
    out = x.clone()
    out[choice == 1] = thick[choice == 1]
    out[choice == 2] = thin[choice == 2]
    return out


def augment_batch(
    x: torch.Tensor, names: tuple[str, ...], pad_value: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    if "stroke" in names:
        x = random_stroke(x, generator)
    if "affine" in names:
        x = random_affine(x, pad_value, generator)
    if "crop" in names:
        x = random_crop(x, pad_value, padding=4, generator=generator)
    if "flip" in names:
        x = random_flip(x, generator)
    return x
