"""The training checkpoint: everything needed to rebuild, evaluate and export the model."""

from __future__ import annotations

import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn

from modelrepo.manifest import ImagePreprocessing, TextPreprocessing
from training.models import build_model

CHECKPOINT_FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A file is not a checkpoint this version of the code can read."""


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically (temp file + rename) so a crash never leaves half a checkpoint."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"format_version": CHECKPOINT_FORMAT_VERSION, **payload}, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load with `weights_only=True`: a checkpoint holds tensors and plain data, never code."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickles before failing
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError) as exc:
        # torch's message is a page of advice about weights_only that does not help here.
        raise CheckpointError(
            f"{path} is not a checkpoint written by `python -m training train` "
            f"(torch.load could not read it: {type(exc).__name__})"
        ) from None
    if not isinstance(ckpt, dict) or "format_version" not in ckpt:
        raise CheckpointError(f"{path} is not a checkpoint written by `python -m training train`")
    if ckpt["format_version"] != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {ckpt['format_version']}; this code reads format "
            f"{CHECKPOINT_FORMAT_VERSION}"
        )
    missing = {"arch", "model_kwargs", "state_dict", "preprocessing", "labels"} - set(ckpt)
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(sorted(missing))}")
    return ckpt


def rebuild_model(ckpt: dict[str, Any]) -> nn.Module:
    """The model exactly as trained, in eval mode, from what the checkpoint holds."""
    kwargs = dict(ckpt["model_kwargs"])
    if "image_size" in kwargs:  # saved as a list; the image models take a tuple
        kwargs["image_size"] = tuple(kwargs["image_size"])
    model = build_model(ckpt["arch"], **kwargs)
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


def is_text_checkpoint(ckpt: dict[str, Any]) -> bool:
    return bool(ckpt["preprocessing"].get("kind") == "text")


def checkpoint_preprocessing(ckpt: dict[str, Any]) -> ImagePreprocessing:
    return ImagePreprocessing.model_validate(ckpt["preprocessing"])


def checkpoint_text_preprocessing(ckpt: dict[str, Any]) -> TextPreprocessing:
    try:
        return TextPreprocessing.model_validate(ckpt["preprocessing"])
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(str(p) for p in problem["loc"]) or "<root>"
        raise CheckpointError(
            f"the checkpoint's text preprocessing is invalid: {where}: {problem['msg']}"
        ) from None
