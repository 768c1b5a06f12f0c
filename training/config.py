"""The training configuration: defaults, overridden by a config file, overridden by flags."""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

CANONICAL_CHOICES = ("none", "digits")
DIGIT_DATASETS = ("mnist-5k", "mnist", "digits")


class ConfigError(ValueError):
    """A config file or flag value cannot be used; the message names it."""


@dataclass(frozen=True)
class TrainConfig:
    arch: str = "mnist-cnn"
    dataset: str = "mnist-5k"
    data_dir: str | None = None
    download: bool = False
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    limit: int | None = None  # use only the first N training samples (of a seeded shuffle)
    seed: int = 0
    augment: list[str] | None = None  # None: the architecture's default augmentation
    canonical: str | None = None  # none | digits; None: digits for mnist-5k, none otherwise
    threads: int | None = None  # torch intra-op threads; None: torch's default
    model_args: dict[str, Any] = field(default_factory=dict)  # extra constructor arguments
    out: str | None = None  # None: runs/<arch>-<dataset>
    # Text models only: ids per sequence, vocabulary size (specials included), and how often
    # a word must occur in the training split to get its own id.
    max_length: int = 64
    vocab_size: int = 10000
    min_count: int = 2

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit must be at least 1, got {self.limit}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be at least 1, got {self.threads}")
        if self.max_length < 2:
            raise ConfigError(f"max_length must be at least 2, got {self.max_length}")
        if self.vocab_size < 4:
            raise ConfigError(
                f"vocab_size must be at least 4 (3 special tokens + 1 word), got {self.vocab_size}"
            )
        if self.min_count < 1:
            raise ConfigError(f"min_count must be at least 1, got {self.min_count}")
        if self.canonical not in (None, *CANONICAL_CHOICES):
            raise ConfigError(
                f"canonical must be one of {', '.join(CANONICAL_CHOICES)}, got {self.canonical!r}"
            )
        if self.canonical == "digits" and self.dataset not in DIGIT_DATASETS:
            raise ConfigError(
                f"canonical digits is for digit data sets ({', '.join(DIGIT_DATASETS)}), "
                f"not {self.dataset}"
            )

    @property
    def canonicalise(self) -> bool:
        """Whether images are brought to MNIST's form (on by default for mnist-5k)."""
        if self.canonical is None:
            return self.dataset == "mnist-5k"
        return self.canonical == "digits"

    @property
    def out_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        dataset = Path(self.dataset).stem if self.dataset.endswith(".csv") else self.dataset
        return Path("runs") / f"{self.arch}-{dataset}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a .toml or .json file of TrainConfig fields; unknown keys are an error."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(raw.decode("utf-8"))
        elif path.suffix == ".json":
            data = json.loads(raw)
        else:
            raise ConfigError(f"config file {path} must end in .toml or .json")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid {path.suffix[1:]}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a table/object of settings")
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"config file {path}: unknown setting(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(known))}"
        )
    return data


def resolve_config(file_values: dict[str, Any], flag_values: dict[str, Any]) -> TrainConfig:
    """Defaults < config file < flags that were given (None means 'not given')."""
    merged = {**file_values, **{k: v for k, v in flag_values.items() if v is not None}}
    try:
        return TrainConfig(**merged)
    except TypeError as exc:
        raise ConfigError(f"bad configuration: {exc}") from None
