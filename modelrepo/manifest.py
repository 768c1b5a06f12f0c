"""The `model.json` manifest: one pydantic model that training writes and the service reads."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

MANIFEST_FORMAT_VERSION: Literal[1] = 1
MODEL_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
_NAME_RE = re.compile(MODEL_NAME_PATTERN)

ColorMode = Literal["L", "RGB"]
Task = Literal["image-classification", "text-classification", "text-pair-classification"]
CHANNELS: dict[str, int] = {"L": 1, "RGB": 3}


class ManifestError(ValueError):
    """A manifest is missing, unreadable or does not describe a loadable model."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Strict):
    """The ONNX graph's input tensor."""

    name: str = Field(min_length=1, examples=["input"])
    dtype: Literal["float32"] = "float32"
    shape: list[int] = Field(
        description="Dimensions; -1 marks a dynamic axis (the batch axis is always dynamic).",
        examples=[[-1, 1, 8, 8]],
    )
    layout: Literal["NCHW"] = "NCHW"

    @field_validator("shape")
    @classmethod
    def _shape_is_nchw(cls, shape: list[int]) -> list[int]:
        if len(shape) != 4:
            raise ValueError(f"an NCHW shape has 4 dimensions, got {shape}")
        if shape[0] != -1:
            raise ValueError(f"the batch axis must be dynamic (-1), got {shape[0]}")
        if any(d < 1 for d in shape[1:]):
            raise ValueError(f"channel, height and width must be positive, got {shape[1:]}")
        return shape


class ImagePreprocessing(_Strict):
    """How an image becomes the model's input tensor, in this order:
    convert to `color`; resize to `size` (bilinear) when it differs; optionally invert
    (255 - pixel); multiply by `scale`; subtract `mean` and divide by `std` per channel."""

    kind: Literal["image"] = "image"
    color: ColorMode = Field(examples=["L"])
    size: tuple[int, int] = Field(description="[height, width] in pixels", examples=[[8, 8]])
    resize: Literal["bilinear"] = "bilinear"
    scale: float = Field(gt=0, examples=[1 / 255])
    mean: list[float] = Field(examples=[[0.3]])
    std: list[float] = Field(examples=[[0.4]])
    invert: bool = False

    @property
    def channels(self) -> int:
        return CHANNELS[self.color]

    @field_validator("size")
    @classmethod
    def _positive_size(cls, size: tuple[int, int]) -> tuple[int, int]:
        if size[0] < 1 or size[1] < 1:
            raise ValueError(f"size must be positive, got {list(size)}")
        return size

    @model_validator(mode="after")
    def _per_channel(self) -> ImagePreprocessing:
        n = self.channels
        if len(self.mean) != n or len(self.std) != n:
            raise ValueError(
                f"color {self.color!r} has {n} channel(s): mean and std need {n} value(s) each, "
                f"got {len(self.mean)} and {len(self.std)}"
            )
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std values must be positive, got {self.std}")
        return self


class TrainingProvenance(_Strict):
    """Where the weights came from."""

    dataset: str
    samples: int = Field(ge=1, description="training samples seen per epoch")
    epochs: int = Field(ge=1)
    seed: int
    test_accuracy: float = Field(ge=0, le=1)
    test_samples: int = Field(ge=1)
    date: datetime


class ExportProvenance(_Strict):
    """How the ONNX file was made and the proof that it matches its checkpoint."""

    exporter: str = Field(examples=["torch.onnx (dynamo)"])
    opset: int = Field(ge=7)
    torch_version: str
    parity_batch_size: int = Field(ge=1)
    parity_max_abs_diff: float = Field(ge=0, description="max |torch - onnxruntime| over logits")
    parity_argmax_equal: bool
    date: datetime


class Manifest(_Strict):
    """Everything the service needs to load, feed and describe one model version."""

    format_version: Literal[1] = MANIFEST_FORMAT_VERSION
    name: str = Field(pattern=MODEL_NAME_PATTERN, examples=["digits-cnn"])
    version: int = Field(ge=1, examples=[1])
    task: Task = "image-classification"
    arch: str = Field(examples=["mnist-cnn"])
    input: InputSpec
    preprocessing: ImagePreprocessing
    labels: list[str] = Field(min_length=2, examples=[["0", "1", "2"]])
    output_name: str = Field(default="logits", min_length=1)
    training: TrainingProvenance
    export: ExportProvenance
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of model.onnx")

    @field_validator("labels")
    @classmethod
    def _unique_labels(cls, labels: list[str]) -> list[str]:
        if len(set(labels)) != len(labels):
            raise ValueError("labels must be unique")
        return labels

    @model_validator(mode="after")
    def _input_matches_preprocessing(self) -> Manifest:
        p = self.preprocessing
        expected = [-1, p.channels, p.size[0], p.size[1]]
        if self.input.shape != expected:
            raise ValueError(
                f"input shape {self.input.shape} does not match preprocessing "
                f"(color {p.color!r}, size {list(p.size)}): expected {expected}"
            )
        return self

    def to_json(self) -> str:
        return self.model_dump_json(indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, *, source: str = "manifest") -> Manifest:
        """Parse and validate; every problem is reported as one ManifestError naming `source`."""
        try:
            return cls.model_validate(json.loads(text))
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{source}: not valid JSON ({exc})") from None
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
                for err in exc.errors()
            )
            raise ManifestError(f"{source}: invalid manifest: {problems}") from None

    @classmethod
    def read(cls, path: Path) -> Manifest:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ManifestError(f"{path}: cannot read manifest ({exc.strerror})") from None
        return cls.from_json(text, source=str(path))


def is_valid_model_name(name: str) -> bool:
    """True for names that are safe as one path component of the repository."""
    return bool(_NAME_RE.match(name))
