"""`python -m training train`: load data, train, evaluate, write checkpoint, metrics and reports;
what differs between image and text models is the task's (training.tasks)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from modelrepo.manifest import ImagePreprocessing, TextPreprocessing
from training import reports
from training.checkpoint import save_checkpoint
from training.config import ConfigError, TrainConfig
from training.engine import Evaluation, confusion_matrix, evaluate, fit, seed_everything
from training.models import build_model, get_architecture
from training.tasks import task_for_modality


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def build_for_training(
    config: TrainConfig, **model_kwargs: Any
) -> tuple[nn.Module, torch.optim.Optimizer, int]:
    """The architecture built from `model_kwargs`, its Adam optimizer and its parameter count;
    ConfigError when the config's model_args do not fit the architecture."""
    try:
        model = build_model(config.arch, **model_kwargs)
    except TypeError as exc:
        raise ConfigError(f"model_args do not fit {config.arch}: {exc}") from None
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return model, optimizer, sum(p.numel() for p in model.parameters())


def run_metrics(
    config: TrainConfig,
    *,
    dataset: str,
    samples: tuple[int, int],
    parameters: int,
    started: float,
    history: list[dict[str, float]],
    final: Evaluation,
    matrix: NDArray[np.int64],
    labels: Sequence[str],
    **extra: Any,
) -> dict[str, Any]:
    """metrics.json for one run: what every run records, then the modality's `extra`."""
    return {
        "arch": config.arch,
        "dataset": dataset,
        "train_samples": samples[0],
        "test_samples": samples[1],
        "epochs": config.epochs,
        "seed": config.seed,
        "parameters": parameters,
        **extra,
        "seconds": round(time.monotonic() - started, 2),
        "history": history,
        "final_test_loss": final.loss,
        "final_test_accuracy": final.accuracy,
        "confusion_matrix": matrix.tolist(),
        "labels": list(labels),
    }


def save_run(
    config: TrainConfig,
    model: nn.Module,
    model_kwargs: dict[str, Any],
    metrics: dict[str, Any],
    preprocessing: ImagePreprocessing | TextPreprocessing,
    source: tuple[str, str],
    **checkpoint_extra: Any,
) -> None:
    """config.json, metrics.json, checkpoint.pt (what every checkpoint holds, then the
    modality's `checkpoint_extra`) and the learning-curve and confusion-matrix PNGs."""
    out_dir = config.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "config.json", config.to_dict())
    write_json(out_dir / "metrics.json", metrics)
    save_checkpoint(
        out_dir / "checkpoint.pt",
        {
            "arch": config.arch,
            "model_kwargs": model_kwargs,
            "state_dict": model.state_dict(),
            "config": config.to_dict(),
            "metrics": {k: v for k, v in metrics.items() if k != "confusion_matrix"},
            "labels": metrics["labels"],
            "preprocessing": preprocessing.model_dump(mode="json"),
            "dataset": {"name": source[0], "source": source[1]},
            **checkpoint_extra,
            "created": datetime.now(UTC).isoformat(),
            "torch_version": str(torch.__version__),
        },
    )
    reports.plot_curves(metrics["history"], out_dir / "curves.png")
    reports.plot_confusion_matrix(
        np.asarray(metrics["confusion_matrix"]), metrics["labels"], out_dir / "confusion_matrix.png"
    )


def run_training(config: TrainConfig, *, force: bool = False) -> dict[str, Any]:
    """Train per `config`, write everything to its output folder and return the metrics."""
    try:
        arch = get_architecture(config.arch)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    task = task_for_modality(arch.modality)
    task.check_config(config, arch)
    out_dir = config.out_dir
    if (out_dir / "checkpoint.pt").exists() and not force:
        raise ConfigError(f"{out_dir} already holds a checkpoint; choose another --out or --force")
    data_dir = Path(config.data_dir).expanduser() if config.data_dir else None
    dataset = task.load(config, data_dir)

    generator = seed_everything(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    data = task.prepare(config, arch, dataset)
    model, optimizer, n_params = build_for_training(config, **data.build_kwargs)
    print(f"{config.arch} ({n_params:,} parameters) on {data.summary}")

    started = time.monotonic()
    history = fit(
        model,
        optimizer,
        data.train,
        data.test,
        epochs=config.epochs,
        batch_size=config.batch_size,
        generator=generator,
        augment=data.augment,
        pad_value=data.pad_value,
        unit=data.unit,
    )

    final = evaluate(model, *data.test)
    matrix = confusion_matrix(data.test[1].numpy(), final.predictions, len(data.labels))
    metrics = run_metrics(
        config,
        dataset=data.name,
        samples=(len(data.train[0]), len(data.test[0])),
        parameters=n_params,
        started=started,
        history=history,
        final=final,
        matrix=matrix,
        labels=data.labels,
        **data.metrics,
    )
    save_run(
        config,
        model,
        data.model_kwargs,
        metrics,
        data.preprocessing,
        (data.name, data.source),
        **data.checkpoint,
    )
    task.write_reports(model, data, final.predictions, out_dir)
    print(f"test accuracy {final.accuracy:.4f}; wrote {out_dir}/checkpoint.pt, {task.reports}")
    return metrics
