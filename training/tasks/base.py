"""The Task: what differs between modalities, as data and a few hooks, for the training driver
(training.train) and the export driver (training.export). Tasks never import the drivers."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from modelrepo.manifest import ExplainOutputs, ImagePreprocessing, InputSpec, TextPreprocessing
from modelrepo.manifest import Task as ManifestTask
from training.config import TrainConfig
from training.explain_outputs import output_names, traced_output_names
from training.models.registry import Architecture, Modality
from training.onnx_checks import OUTPUT_NAME

PARITY_BATCH = 32  # held-out test rows stored in the checkpoint for the export parity check


@dataclass(frozen=True, kw_only=True)
class TrainingData:
    """A data set made ready for the training loop, and what its run records."""

    name: str
    source: str
    labels: tuple[str, ...]
    train: tuple[torch.Tensor, torch.Tensor]  # inputs, labels
    test: tuple[torch.Tensor, torch.Tensor]
    preprocessing: ImagePreprocessing | TextPreprocessing
    model_kwargs: dict[str, Any]  # as saved in the checkpoint
    build_kwargs: dict[str, Any]  # as the constructor takes them
    summary: str  # the run's first line, after "<arch> (<n> parameters) on "
    metrics: dict[str, Any]  # the modality's entries in metrics.json
    checkpoint: dict[str, Any]  # the modality's entries in checkpoint.pt, parity inputs included
    augment: tuple[str, ...] = ()
    pad_value: torch.Tensor | None = None  # what augmentation pads with
    unit: str = "img"  # for the progress bar


@dataclass(frozen=True)
class ExportPlan:
    """What a task reads from a checkpoint to export it and write its manifest."""

    preprocessing: ImagePreprocessing | TextPreprocessing
    inputs: NDArray[Any]  # held-out parity inputs; also the export's example
    input: InputSpec
    manifest_task: ManifestTask
    dataset: str | None = None  # the manifest's training dataset; None: the checkpoint's name
    sequence_lengths: list[int] = field(default_factory=list)  # token counts proven, if any
    explain: ExplainOutputs | None = None  # the graph's extra outputs after the logits, if any

    @property
    def output_names(self) -> list[str]:
        """The graph's outputs: the logits first, then the explain outputs."""
        return [OUTPUT_NAME, *output_names(self.explain)]

    @property
    def traced_output_names(self) -> list[str]:
        """The outputs torch.onnx.export names (the rest are added by Task.finish_graph)."""
        return [OUTPUT_NAME, *traced_output_names(self.explain)]


DatasetT = TypeVar("DatasetT")
DataT = TypeVar("DataT", bound=TrainingData)


class Task(ABC, Generic[DatasetT, DataT]):
    """One modality (an architecture's `modality`, a checkpoint's `preprocessing.kind`)."""

    modality: ClassVar[Modality]
    reports: ClassVar[str]  # what the run writes besides the checkpoint, for its last line
    exporter: ClassVar[str]  # the manifest's export.exporter
    dynamic_axes: ClassVar[tuple[str, ...]]  # the names of the input's leading axes, all dynamic
    optimize: ClassVar[bool] = True  # onnxscript's graph optimiser, torch.onnx.export(optimize=)

    # Training, in the order the driver calls them.
    @abstractmethod
    def check_config(self, config: TrainConfig, arch: Architecture) -> None:
        """ConfigError for settings this modality cannot train with."""

    @abstractmethod
    def load(self, config: TrainConfig, data_dir: Path | None) -> DatasetT: ...

    @abstractmethod
    def prepare(self, config: TrainConfig, arch: Architecture, dataset: DatasetT) -> DataT:
        """Tensors and records for the run; called after seeding."""

    @abstractmethod
    def write_reports(
        self, model: nn.Module, data: DataT, predictions: NDArray[np.int64], out_dir: Path
    ) -> None: ...

    # Export, in the order the driver calls them.
    @abstractmethod
    def export_plan(self, ckpt: dict[str, Any], model: nn.Module) -> ExportPlan:
        """CheckpointError when the checkpoint lacks what the export needs (`model`: the
        checkpoint's, rebuilt in eval mode)."""

    def export_module(self, model: nn.Module, plan: ExportPlan) -> nn.Module:
        """What torch.onnx.export traces: returns the plan's traced outputs, in order."""
        return model

    def before_export(self) -> None:
        """Called right before each torch.onnx.export."""

    def finish_graph(self, path: Path, model: nn.Module, plan: ExportPlan) -> None:
        """Called on the file torch.onnx.export wrote, before it is checked: adds the outputs
        that are not traced."""

    @abstractmethod
    def verify_graph(self, path: Path, plan: ExportPlan, num_classes: int) -> None:
        """ExportError unless the file at `path` has the input and output shapes served."""

    @abstractmethod
    def prove_parity(self, model: nn.Module, path: Path, plan: ExportPlan) -> float:
        """The max abs diff between torch and onnxruntime on the plan's inputs; ExportError
        over PARITY_TOLERANCE or on any argmax that differs."""

    @abstractmethod
    def describe_parity(self, plan: ExportPlan, diff: float) -> str:
        """The export's last line, after the opset."""
