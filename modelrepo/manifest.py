"""The `model.json` manifest: one pydantic model that training writes and the service reads."""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

MANIFEST_FORMAT_VERSION: Literal[1] = 1
MODEL_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
_NAME_RE = re.compile(MODEL_NAME_PATTERN)

ColorMode = Literal["L", "RGB"]
Task = Literal["image-classification", "text-classification", "text-pair-classification"]
TEXT_TASKS: tuple[Task, ...] = ("text-classification", "text-pair-classification")
CHANNELS: dict[str, int] = {"L": 1, "RGB": 3}
# Words (letters, digits, underscore) with inner apostrophes kept: "don't" is one token.
DEFAULT_TOKEN_PATTERN = r"\w+(?:'\w+)*"


class ManifestError(ValueError):
    """A manifest is missing, unreadable or does not describe a loadable model."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Strict):
    """The ONNX graph's input tensor: NCHW float32 pixels, or NT int64 token ids."""

    name: str = Field(min_length=1, examples=["input"])
    dtype: Literal["float32", "int64"] = "float32"
    shape: list[int] = Field(
        description=(
            "Dimensions; -1 marks a dynamic axis (the batch axis is always dynamic; NT shapes "
            "are [-1, -1]: any batch, any number of tokens)."
        ),
        examples=[[-1, 1, 8, 8], [-1, -1]],
    )
    layout: Literal["NCHW", "NT"] = Field(
        default="NCHW", description="NCHW: batch, channels, height, width. NT: batch, tokens."
    )

    @model_validator(mode="after")
    def _shape_fits_layout(self) -> InputSpec:
        shape = self.shape
        if self.layout == "NT":
            if shape != [-1, -1]:
                raise ValueError(f"an NT shape is [-1, -1] (batch and tokens dynamic), got {shape}")
            return self
        if len(shape) != 4:
            raise ValueError(f"an NCHW shape has 4 dimensions, got {shape}")
        if shape[0] != -1:
            raise ValueError(f"the batch axis must be dynamic (-1), got {shape[0]}")
        if any(d < 1 for d in shape[1:]):
            raise ValueError(f"channel, height and width must be positive, got {shape[1:]}")
        return self


class DigitCanonicalisation(_Strict):
    """Bring a photographed, scanned or drawn digit to MNIST's form, the way MNIST was made:
    grey levels; light paper is inverted so that ink is bright on dark; the background
    (fitted to the border, so uneven light goes too) and faint texture or noise below
    `noise_floor` of the ink's contrast removed; cropped to the ink; its longer side scaled to
    `box` pixels with antialiasing; placed on the canvas (`size`) with the ink's centre of mass
    at the centre. An image whose ink stands less than `min_contrast` grey levels above its
    background has no ink: it is refused, never guessed at."""

    kind: Literal["digits"] = "digits"
    box: int = Field(default=20, ge=1, description="the ink's longer side, in pixels")
    noise_floor: float = Field(
        default=0.15,
        ge=0,
        lt=1,
        description="share of the ink's contrast below which a pixel is background",
    )
    min_contrast: int = Field(
        default=40, ge=1, le=255, description="grey levels the ink must stand above the paper"
    )
    work_size: int = Field(
        default=512,
        ge=32,
        description="larger images are first reduced so their longer side is at most this",
    )


class ImagePreprocessing(_Strict):
    """How an image becomes the model's input tensor, in this order:
    convert to `color`; canonicalise (when `canonical` is given: it also brings the image to
    `size`) or else resize to `size` (bilinear) when it differs; optionally invert
    (255 - pixel); multiply by `scale`; subtract `mean` and divide by `std` per channel."""

    kind: Literal["image"] = "image"
    color: ColorMode = Field(examples=["L"])
    size: tuple[int, int] = Field(description="[height, width] in pixels", examples=[[8, 8]])
    resize: Literal["bilinear"] = "bilinear"
    scale: float = Field(gt=0, examples=[1 / 255])
    mean: list[float] = Field(examples=[[0.3]])
    std: list[float] = Field(examples=[[0.4]])
    invert: bool = False
    canonical: DigitCanonicalisation | None = Field(
        default=None, description="MNIST-style canonicalisation of digits; none when absent"
    )

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
        if self.canonical is not None:
            if self.color != "L":
                raise ValueError("digit canonicalisation works on grey images: color must be L")
            if self.canonical.box > min(self.size):
                raise ValueError(
                    f"canonical.box {self.canonical.box} does not fit the {list(self.size)} canvas"
                )
            if self.invert:
                raise ValueError("canonicalisation already makes ink bright: invert must be false")
        return self


class TextPreprocessing(_Strict):
    """How text becomes the model's (N, max_length) int64 token ids (see `modelrepo.text`):
    NFC-normalise; lower-case when `lowercase`; tokens are the matches of `token_pattern`;
    look each token up in `vocabulary` (index = id; unknown -> the unk id); a pair is
    tokens(text) + [sep] + tokens(text_pair); cut and pad with the pad id (0) to `max_length`."""

    kind: Literal["text"] = "text"
    lowercase: bool = True
    token_pattern: str = Field(
        description="Python `re` pattern; the tokens are re.findall(token_pattern, text)",
        examples=[DEFAULT_TOKEN_PATTERN],
    )
    max_length: int = Field(
        ge=2,
        description="every sequence is cut or padded to exactly this many ids, so batching "
        "never changes a result",
        examples=[48],
    )
    pad_token: str = Field(default="<pad>", min_length=1)
    unk_token: str = Field(default="<unk>", min_length=1)
    sep_token: str = Field(default="<sep>", min_length=1)
    vocabulary: list[str] = Field(
        min_length=4,
        description="token per id: pad (0), unk (1), sep (2), then the words",
        examples=[["<pad>", "<unk>", "<sep>", "the"]],
    )
    max_text_chars: int = Field(
        default=2000, ge=1, description="longest request text (each side of a pair) accepted"
    )

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def unk_id(self) -> int:
        return 1

    @property
    def sep_id(self) -> int:
        return 2

    @field_validator("token_pattern")
    @classmethod
    def _usable_pattern(cls, pattern: str) -> str:
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"token_pattern is not a valid regular expression: {exc}") from None
        # re.findall returns the groups, not the matches, when a pattern has capturing groups.
        if compiled.groups:
            raise ValueError("token_pattern must not have capturing groups; use (?:...)")
        if compiled.fullmatch(""):
            raise ValueError("token_pattern must not match the empty string")
        return pattern

    @model_validator(mode="after")
    def _specials_lead_the_vocabulary(self) -> TextPreprocessing:
        specials = [self.pad_token, self.unk_token, self.sep_token]
        if len(set(specials)) != 3:
            raise ValueError(f"pad, unk and sep tokens must differ, got {specials}")
        if self.vocabulary[:3] != specials:
            raise ValueError(
                f"the vocabulary must start with {specials} (ids 0, 1, 2), "
                f"got {self.vocabulary[:3]}"
            )
        repeated = sorted(t for t, n in Counter(self.vocabulary).items() if n > 1)
        if repeated:
            raise ValueError(f"vocabulary entries must be unique, repeated: {repeated[:5]}")
        return self


Preprocessing = Annotated[ImagePreprocessing | TextPreprocessing, Field(discriminator="kind")]


class TrainingProvenance(_Strict):
    """Where the weights came from."""

    dataset: str
    split: str | None = Field(
        default=None, description="where the data came from and how it was split"
    )
    augment: list[str] = Field(default_factory=list, description="training augmentation")
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
    parity_sequence_lengths: list[int] | None = Field(
        default=None,
        description="text models: the token counts the parity check ran at (the max abs diff "
        "covers them all, at batch sizes 1, 17 and parity_batch_size)",
    )
    date: datetime


class ExplainOutput(_Strict):
    """An extra output of the ONNX graph that /explain reads; /predict never asks for it."""

    name: str = Field(
        min_length=1, description="the graph output's name", examples=["activation_1"]
    )
    layer: str = Field(
        min_length=1,
        description="the training model's module it comes from (its path in named_modules)",
        examples=["features.1"],
    )
    shape: list[int] = Field(
        description="activations: (C, H, W) per input (the output is (N, C, H, W)); filters: "
        "(out, in, kh, kw), the output itself",
        examples=[[32, 28, 28]],
    )

    @field_validator("shape")
    @classmethod
    def _positive_dims(cls, shape: list[int]) -> list[int]:
        if len(shape) not in (3, 4) or any(d < 1 for d in shape):
            raise ValueError(f"shape must be 3 or 4 positive dimensions, got {shape}")
        return shape


class ExplainOutputs(_Strict):
    """What a CNN's graph gives besides the logits, for /explain: each convolution block's
    activation maps (after the activation, in model order) and the first convolution's
    weights. A manifest without it still serves /explain, with occlusion only."""

    activations: list[ExplainOutput] = Field(default_factory=list)
    filters: ExplainOutput | None = None

    @model_validator(mode="after")
    def _shapes_and_names(self) -> ExplainOutputs:
        if any(len(a.shape) != 3 for a in self.activations):
            raise ValueError("activation shapes are (C, H, W)")
        if self.filters is not None and len(self.filters.shape) != 4:
            raise ValueError("the filters' shape is (out, in, kh, kw)")
        names = [a.name for a in self.activations] + ([self.filters.name] if self.filters else [])
        if len(set(names)) != len(names):
            raise ValueError(f"explain output names must be unique, got {names}")
        return self


class Manifest(_Strict):
    """Everything the service needs to load, feed and describe one model version."""

    format_version: Literal[1] = MANIFEST_FORMAT_VERSION
    name: str = Field(pattern=MODEL_NAME_PATTERN, examples=["digits-cnn"])
    version: int = Field(ge=1, examples=[1])
    task: Task = "image-classification"
    arch: str = Field(examples=["mnist-cnn"])
    input: InputSpec
    preprocessing: Preprocessing
    labels: list[str] = Field(min_length=2, examples=[["0", "1", "2"]])
    output_name: str = Field(default="logits", min_length=1)
    explain: ExplainOutputs | None = Field(
        default=None, description="the graph's extra outputs for /explain; none when absent"
    )
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
    def _explain_fits(self) -> Manifest:
        if self.explain is None:
            return self
        if not isinstance(self.preprocessing, ImagePreprocessing):
            raise ValueError("explain outputs are for image models")
        names = [a.name for a in self.explain.activations]
        if self.explain.filters is not None:
            names.append(self.explain.filters.name)
            if self.explain.filters.shape[1] != self.preprocessing.channels:
                raise ValueError(
                    f"the first convolution reads {self.explain.filters.shape[1]} channel(s), "
                    f"the input has {self.preprocessing.channels}"
                )
        if self.output_name in names or self.input.name in names:
            raise ValueError("explain outputs must not reuse the input's or the logits' name")
        return self

    @model_validator(mode="after")
    def _input_matches_preprocessing(self) -> Manifest:
        p, spec = self.preprocessing, self.input
        if isinstance(p, TextPreprocessing):
            if (spec.layout, spec.dtype) != ("NT", "int64"):
                raise ValueError(
                    f"text preprocessing feeds an NT int64 input, but the input is "
                    f"{spec.layout} {spec.dtype}"
                )
            if self.task not in TEXT_TASKS:
                raise ValueError(f"text preprocessing needs a text task, got task {self.task!r}")
            return self
        if (spec.layout, spec.dtype) != ("NCHW", "float32"):
            raise ValueError(
                f"image preprocessing feeds an NCHW float32 input, but the input is "
                f"{spec.layout} {spec.dtype}"
            )
        if self.task != "image-classification":
            raise ValueError(
                f"image preprocessing needs task 'image-classification', got {self.task!r}"
            )
        expected = [-1, p.channels, p.size[0], p.size[1]]
        if spec.shape != expected:
            raise ValueError(
                f"input shape {spec.shape} does not match preprocessing "
                f"(color {p.color!r}, size {list(p.size)}): expected {expected}"
            )
        return self

    @property
    def image_preprocessing(self) -> ImagePreprocessing:
        """The preprocessing of an image model (a typed shortcut); TypeError for a text model."""
        if not isinstance(self.preprocessing, ImagePreprocessing):
            raise TypeError(f"{self.name} is a {self.task} model, not an image model")
        return self.preprocessing

    @property
    def text_preprocessing(self) -> TextPreprocessing:
        """The preprocessing of a text model (a typed shortcut); TypeError for an image model."""
        if not isinstance(self.preprocessing, TextPreprocessing):
            raise TypeError(f"{self.name} is a {self.task} model, not a text model")
        return self.preprocessing

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
            problems = "; ".join(f"{_where(err['loc'])}: {err['msg']}" for err in exc.errors())
            raise ManifestError(f"{source}: invalid manifest: {problems}") from None

    @classmethod
    def read(cls, path: Path) -> Manifest:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ManifestError(f"{path}: cannot read manifest ({exc.strerror})") from None
        return cls.from_json(text, source=str(path))


def _where(loc: tuple[int | str, ...]) -> str:
    """An error's field path; the union's tag is left out (preprocessing.color, not
    preprocessing.image.color), so paths read the same as the JSON."""
    parts = [str(p) for p in loc]
    if len(parts) >= 2 and parts[0] == "preprocessing" and parts[1] in ("image", "text"):
        del parts[1]
    return ".".join(parts) or "<root>"


def is_valid_model_name(name: str) -> bool:
    """True for names that are safe as one path component of the repository."""
    return bool(_NAME_RE.match(name))
