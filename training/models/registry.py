"""A small registry of model families: one file per family registers its builder by name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from torch import nn

M = TypeVar("M", bound=type[nn.Module])
Modality = Literal["image", "text"]


@dataclass(frozen=True)
class Architecture:
    """A registered model family, what it reads and the training augmentation it is meant to use."""

    name: str
    cls: type[nn.Module]
    augment: tuple[str, ...] = ()  # names understood by training.augment
    modality: Modality = "image"  # image: (N, C, H, W) float32; text: (N, T) int64 token ids


_REGISTRY: dict[str, Architecture] = {}


def register_model(
    name: str, *, augment: tuple[str, ...] = (), modality: Modality = "image"
) -> Callable[[M], M]:
    """Class decorator: make `cls` buildable as `name`."""

    def wrap(cls: M) -> M:
        if name in _REGISTRY:
            raise ValueError(f"architecture {name!r} is registered twice")
        _REGISTRY[name] = Architecture(name=name, cls=cls, augment=augment, modality=modality)
        return cls

    return wrap


def architectures() -> list[str]:
    return sorted(_REGISTRY)


def get_architecture(name: str) -> Architecture:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown architecture {name!r}; choose one of: {', '.join(architectures())}"
        ) from None


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model from its constructor arguments (as saved in a checkpoint)."""
    return get_architecture(name).cls(**kwargs)
