"""`python -m training export`: checkpoint -> self-contained ONNX + manifest, proven equal.

The exported file must give the same logits as the checkpoint on a real held-out batch (max abs
diff <= PARITY_TOLERANCE, identical argmax) and must accept any batch size; otherwise nothing is
written to the repository. Text checkpoints go through training.export_text, which also makes
and checks the sequence axis dynamic.
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

import numpy as np
import onnx
import onnxruntime as ort
import torch

from modelrepo.layout import next_version, sha256_file, write_version
from modelrepo.manifest import (
    ExportProvenance,
    ImagePreprocessing,
    InputSpec,
    Manifest,
    TrainingProvenance,
)
from modelrepo.preprocess import pixels_to_input
from training.checkpoint import (
    checkpoint_preprocessing,
    is_text_checkpoint,
    load_checkpoint,
    rebuild_model,
)

PARITY_TOLERANCE = 1e-4
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
EXPORTER = "torch.onnx.export (dynamo)"
DYNAMIC_BATCH_CHECKS = (1, 17)


class ExportError(RuntimeError):
    """The exported graph is not a faithful, self-contained copy of the checkpoint."""


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The dynamo exporter prints pages of warnings and progress; keep only errors."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch._dynamo", "torch.export")]
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


def export_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path) -> int:
    """Export with a dynamic batch axis into one file; returns the opset used."""
    batch = torch.export.Dim("batch")
    with _quiet_exporter():
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=True,
            external_data=False,  # one self-contained file, no .data sidecar
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes={"x": {0: batch}},
        )
    loaded = onnx.load(str(path))
    return next(o.version for o in loaded.opset_import if o.domain in ("", "ai.onnx"))


def _dims(value_info: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def load_checked_graph(path: Path) -> onnx.GraphProto:
    """Full ONNX check, weights in the one file, and exactly one graph input, INPUT_NAME."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"onnx.checker rejected the exported graph: {exc}") from None
    graph = onnx.load(str(path), load_external_data=False).graph
    external = [t.name for t in graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise ExportError(f"the exported graph keeps weights in external files: {external[:3]}")
    if [i.name for i in graph.input] != [INPUT_NAME]:
        raise ExportError(
            f"expected one graph input {INPUT_NAME!r}, got {[i.name for i in graph.input]}"
        )
    return graph


def check_output(graph: onnx.GraphProto, num_classes: int) -> None:
    """The graph's output is [symbolic batch, num_classes]."""
    out_dims = _dims(graph.output[0])
    if not isinstance(out_dims[0], str) or out_dims[1:] != [num_classes]:
        raise ExportError(f"output shape is {out_dims}, expected [batch, {num_classes}]")


def check_graph(path: Path, chw: tuple[int, int, int], num_classes: int) -> None:
    """Full ONNX check, plus the shapes we rely on: a symbolic batch axis in and out.

    NOTE: torch's dynamo exporter has been seen to fix an LSTM's batch axis to the example's
    size after the first LSTM export in a process, silently; this catches it.
    """
    graph = load_checked_graph(path)
    in_dims = _dims(graph.input[0])
    if not isinstance(in_dims[0], str) or in_dims[1:] != list(chw):
        raise ExportError(f"input shape is {in_dims}, expected [batch, {', '.join(map(str, chw))}]")
    check_output(graph, num_classes)


def parity(
    model: torch.nn.Module,
    path: Path,
    x: np.ndarray,
    session: ort.InferenceSession | None = None,
) -> tuple[float, bool]:
    """max |torch - onnxruntime| over the logits of `x`, and whether every argmax agrees
    (`session`: one already open on `path`, to check several inputs with one session)."""
    if session is None:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    actual = session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
    if actual.shape != expected.shape:
        raise ExportError(f"onnxruntime returned shape {actual.shape}, torch {expected.shape}")
    diff = float(np.abs(actual - expected).max())
    return diff, bool((actual.argmax(1) == expected.argmax(1)).all())


def _check_dynamic_batch(model: torch.nn.Module, path: Path, x: np.ndarray) -> None:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in DYNAMIC_BATCH_CHECKS:
        batch = np.resize(x, (n, *x.shape[1:]))  # repeats real images to reach n
        diff, same = parity(model, path, batch, session)
        if diff > PARITY_TOLERANCE or not same:
            raise ExportError(f"at batch size {n} the export differs from torch (max diff {diff})")


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
    spec: ImagePreprocessing,
    sha256: str,
    opset: int,
    diff: float,
    argmax_equal: bool,
    parity_batch: int,
) -> Manifest:
    return Manifest(
        name=name,
        version=version,
        arch=ckpt["arch"],
        input=InputSpec(name=INPUT_NAME, shape=[-1, spec.channels, spec.size[0], spec.size[1]]),
        preprocessing=spec,
        labels=list(ckpt["labels"]),
        output_name=OUTPUT_NAME,
        training=training_provenance(ckpt),
        export=ExportProvenance(
            exporter=EXPORTER,
            opset=opset,
            torch_version=str(torch.__version__),
            parity_batch_size=parity_batch,
            parity_max_abs_diff=diff,
            parity_argmax_equal=argmax_equal,
            date=datetime.now(UTC),
        ),
        sha256=sha256,
    )


def export_checkpoint(checkpoint: Path, name: str, repo: Path) -> Path:
    """Export `checkpoint` as the next version of `name` in `repo`; returns the version folder."""
    ckpt = load_checkpoint(checkpoint)
    model = rebuild_model(ckpt)
    if is_text_checkpoint(ckpt):
        from training.export_text import export_text_checkpoint

        return export_text_checkpoint(ckpt, model, name, repo)
    spec = checkpoint_preprocessing(ckpt)
    x = pixels_to_input(ckpt["parity_images"].numpy(), spec)  # a real held-out batch
    chw = (spec.channels, spec.size[0], spec.size[1])
    version = next_version(repo, name)
    with tempfile.TemporaryDirectory(prefix="export-") as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        opset = export_onnx(model, torch.from_numpy(x), onnx_path)
        check_graph(onnx_path, chw, len(ckpt["labels"]))
        diff, argmax_equal = parity(model, onnx_path, x)
        if diff > PARITY_TOLERANCE or not argmax_equal:
            raise ExportError(
                f"parity check failed on {len(x)} held-out images: max abs diff {diff:.3g} "
                f"(tolerance {PARITY_TOLERANCE}), argmax equal: {argmax_equal}"
            )
        _check_dynamic_batch(model, onnx_path, x)
        manifest = build_manifest(
            ckpt, name, version, spec, sha256_file(onnx_path), opset, diff, argmax_equal, len(x)
        )
        target = write_version(repo, onnx_path, manifest)
    print(
        f"exported {name} version {version} to {target} (opset {opset}, "
        f"parity max abs diff {diff:.2e} on {len(x)} held-out images, argmax equal)"
    )
    return target
