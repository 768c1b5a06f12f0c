"""`python -m training export`: checkpoint -> self-contained ONNX + manifest, proven equal.

The exported file must give the same logits as the checkpoint on real held-out inputs (max abs
diff <= PARITY_TOLERANCE, identical argmax) and must accept any batch size (and, for text, any
number of tokens); otherwise nothing is written to the repository. An image model with
convolutions also gets the outputs /explain reads after the logits (training.explain_outputs),
proven the same way. What differs between image and text models is the task's (training.tasks).
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import onnx
import torch

from modelrepo.layout import next_version, sha256_file, write_version
from modelrepo.manifest import ExportProvenance, Manifest, TrainingProvenance
from training.checkpoint import load_checkpoint, rebuild_model
from training.onnx_checks import INPUT_NAME, OUTPUT_NAME, PARITY_TOLERANCE, ExportError
from training.tasks import ExportPlan, Task, task_for_checkpoint

__all__ = ["PARITY_TOLERANCE", "ExportError", "export_checkpoint"]


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The dynamo exporter prints pages of warnings and progress; keep only errors."""
    names = ("torch.onnx", "torch._dynamo", "torch.export", "onnx_ir")  # onnx_ir: its optimiser
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def export_onnx(
    model: torch.nn.Module,
    example: torch.Tensor,
    path: Path,
    task: Task[Any, Any],
    output_names: list[str] | None = None,
) -> int:
    """Export with the task's dynamic axes into one file, its outputs named `output_names`
    (default: the logits alone); returns the opset used."""
    axes = {i: torch.export.Dim(name) for i, name in enumerate(task.dynamic_axes)}
    task.before_export()
    with _quiet_exporter():
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=True,
            optimize=task.optimize,
            external_data=False,  # one self-contained file, no .data sidecar
            input_names=[INPUT_NAME],
            output_names=output_names or [OUTPUT_NAME],
            dynamic_shapes=(axes,),
        )
    loaded = onnx.load(str(path))
    return next(o.version for o in loaded.opset_import if o.domain in ("", "ai.onnx"))


def training_provenance(ckpt: dict[str, Any], dataset: str | None = None) -> TrainingProvenance:
    """The manifest's training block from what the checkpoint recorded."""
    metrics = ckpt.get("metrics", {})
    config = ckpt.get("config", {})
    return TrainingProvenance(
        dataset=dataset or ckpt.get("dataset", {}).get("name", config.get("dataset", "unknown")),
        split=ckpt.get("dataset", {}).get("source"),
        augment=list(metrics.get("augment", [])),
        samples=metrics["train_samples"],
        epochs=metrics["epochs"],
        seed=metrics["seed"],
        test_accuracy=metrics["final_test_accuracy"],
        test_samples=metrics["test_samples"],
        date=datetime.fromisoformat(ckpt["created"]),
    )


def build_manifest(
    ckpt: dict[str, Any],
    name: str,
    version: int,
    task: Task[Any, Any],
    plan: ExportPlan,
    sha256: str,
    opset: int,
    diff: float,
) -> Manifest:
    return Manifest(
        name=name,
        version=version,
        task=plan.manifest_task,
        arch=ckpt["arch"],
        input=plan.input,
        preprocessing=plan.preprocessing,
        labels=list(ckpt["labels"]),
        output_name=OUTPUT_NAME,
        explain=plan.explain,
        training=training_provenance(ckpt, plan.dataset),
        export=ExportProvenance(
            exporter=task.exporter,
            opset=opset,
            torch_version=str(torch.__version__),
            parity_batch_size=len(plan.inputs),
            parity_max_abs_diff=diff,
            parity_argmax_equal=True,  # prove_parity raises on any argmax that differs
            parity_sequence_lengths=plan.sequence_lengths or None,
            date=datetime.now(UTC),
        ),
        sha256=sha256,
    )


def export_checkpoint(checkpoint: Path, name: str, repo: Path) -> Path:
    """Export `checkpoint` as the next version of `name` in `repo`; returns the version folder."""
    ckpt = load_checkpoint(checkpoint)
    model = rebuild_model(ckpt)
    task = task_for_checkpoint(ckpt)
    plan = task.export_plan(ckpt, model)
    version = next_version(repo, name)
    with tempfile.TemporaryDirectory(prefix="export-") as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        module = task.export_module(model, plan)
        example = torch.from_numpy(plan.inputs)
        opset = export_onnx(module, example, onnx_path, task, plan.traced_output_names)
        task.finish_graph(onnx_path, model, plan)
        task.verify_graph(onnx_path, plan, len(ckpt["labels"]))
        diff = task.prove_parity(model, onnx_path, plan)
        manifest = build_manifest(
            ckpt, name, version, task, plan, sha256_file(onnx_path), opset, diff
        )
        target = write_version(repo, onnx_path, manifest)
    print(
        f"exported {name} version {version} to {target} "
        f"(opset {opset}, {task.describe_parity(plan, diff)})"
    )
    return target
