"""One training task per modality, looked up by an architecture's modality or a checkpoint's
preprocessing kind."""

from __future__ import annotations

from typing import Any

from training.checkpoint import is_text_checkpoint
from training.models.registry import Modality
from training.tasks.base import PARITY_BATCH, ExportPlan, Task, TrainingData
from training.tasks.image import ImageTask
from training.tasks.text import TextTask

TASKS: dict[Modality, Task[Any, Any]] = {task.modality: task for task in (ImageTask(), TextTask())}


def task_for_modality(modality: Modality) -> Task[Any, Any]:
    return TASKS[modality]


def task_for_checkpoint(ckpt: dict[str, Any]) -> Task[Any, Any]:
    """The text task for text preprocessing, else the image task."""
    return TASKS["text" if is_text_checkpoint(ckpt) else "image"]


__all__ = [
    "PARITY_BATCH",
    "TASKS",
    "ExportPlan",
    "Task",
    "TrainingData",
    "task_for_checkpoint",
    "task_for_modality",
]
