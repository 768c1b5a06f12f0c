"""Export of text checkpoints: (N, T) int64 token ids in, (N, classes) logits out, with both
the batch and the sequence axis dynamic, proven on held-out rows at several lengths.

NOTE: with torch 2.13 the dynamo exporter's graph optimiser (onnxscript's constant folding)
bakes the example's sequence length into a Reshape after the first LSTM, so the graph claims a
dynamic token axis but fails at any other length. Exporting with `optimize=False` keeps the
shape computation symbolic (onnxruntime still folds constants when it loads the file); the
parity check at several lengths below is what proves it. The legacy TorchScript exporter
(dynamo=False) also gives a working graph, but it is deprecated, so it is not used.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from numpy.typing import NDArray

from modelrepo.layout import next_version, sha256_file, write_version
from modelrepo.manifest import ExportProvenance, InputSpec, Manifest, TextPreprocessing
from training.checkpoint import CheckpointError, checkpoint_text_preprocessing
from training.export import (
    DYNAMIC_BATCH_CHECKS,
    INPUT_NAME,
    OUTPUT_NAME,
    PARITY_TOLERANCE,
    ExportError,
    _dims,
    _quiet_exporter,
    check_output,
    load_checked_graph,
    parity,
    training_provenance,
)

EXPORTER = "torch.onnx.export (dynamo, optimize=False)"
SEQUENCE_CHECKS = (1, 7)  # token counts checked besides max_length


def _forget_cached_lstm_kernels() -> None:
    """NOTE: for a dynamic sequence axis torch.onnx swaps a while-loop LSTM decomposition into
    aten.lstm's kernels for the length of one export, but the op's dispatch cache keeps the
    unrolled decomposition (`lstm_impl`) it resolved on the way; the next export in the same
    process then unrolls the loop and silently fixes the token axis to the example's length.
    Clearing that private cache before each export avoids it; check_graph would catch it."""
    for op in (torch.ops.aten.lstm.input, torch.ops.aten.lstm.data):
        cache = getattr(op, "_dispatch_cache", None)
        if isinstance(cache, dict):
            cache.clear()


def export_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path) -> int:
    """Export with dynamic batch and token axes into one file; returns the opset used."""
    batch, tokens = torch.export.Dim("batch"), torch.export.Dim("tokens")
    _forget_cached_lstm_kernels()
    with _quiet_exporter():
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=True,
            optimize=False,  # see the module docstring
            external_data=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: batch, 1: tokens},),
        )
    loaded = onnx.load(str(path))
    return next(o.version for o in loaded.opset_import if o.domain in ("", "ai.onnx"))


def check_graph(path: Path, num_classes: int) -> None:
    """Full ONNX check, one self-contained file, an int64 [batch, tokens] input with both axes
    symbolic, and a [batch, num_classes] output."""
    graph = load_checked_graph(path)
    value = graph.input[0]
    in_dims = _dims(value)
    if value.type.tensor_type.elem_type != onnx.TensorProto.INT64:
        dtype = onnx.TensorProto.DataType.Name(value.type.tensor_type.elem_type)
        raise ExportError(f"input dtype is {dtype}, expected INT64 token ids")
    if len(in_dims) != 2 or not all(isinstance(d, str) for d in in_dims):
        raise ExportError(f"input shape is {in_dims}, expected [batch, tokens], both dynamic")
    check_output(graph, num_classes)


def parity_grid(
    model: torch.nn.Module, path: Path, x: NDArray[np.int64], lengths: list[int]
) -> float:
    """max |torch - onnxruntime| over the held-out rows `x` cut to each of `lengths` tokens, at
    batch sizes 1, 17 and len(x); raises ExportError on a diff over tolerance or any argmax
    that differs."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for length in lengths:
        rows = np.ascontiguousarray(x[:, :length])
        for n in (*DYNAMIC_BATCH_CHECKS, len(x)):
            batch = np.resize(rows, (n, length))  # repeats held-out rows to reach n
            diff, argmax_equal = parity(model, path, batch, session)
            if diff > PARITY_TOLERANCE or not argmax_equal:
                raise ExportError(
                    f"parity check failed at batch {n} x {length} tokens: max abs diff "
                    f"{diff:.3g} (tolerance {PARITY_TOLERANCE}) or a different argmax"
                )
            worst = max(worst, diff)
    return worst


def build_manifest(
    ckpt: dict[str, Any],
    name: str,
    version: int,
    spec: TextPreprocessing,
    sha256: str,
    opset: int,
    diff: float,
    parity_batch: int,
    lengths: list[int],
) -> Manifest:
    source = ckpt.get("dataset", {})
    dataset = f"{source['name']}: {source['source']}" if "source" in source else None
    return Manifest(
        name=name,
        version=version,
        task=ckpt["task"],
        arch=ckpt["arch"],
        input=InputSpec(name=INPUT_NAME, dtype="int64", shape=[-1, -1], layout="NT"),
        preprocessing=spec,
        labels=list(ckpt["labels"]),
        output_name=OUTPUT_NAME,
        training=training_provenance(ckpt, dataset),
        export=ExportProvenance(
            exporter=EXPORTER,
            opset=opset,
            torch_version=str(torch.__version__),
            parity_batch_size=parity_batch,
            parity_max_abs_diff=diff,
            parity_argmax_equal=True,
            parity_sequence_lengths=lengths,
            date=datetime.now(UTC),
        ),
        sha256=sha256,
    )


def export_text_checkpoint(
    ckpt: dict[str, Any], model: torch.nn.Module, name: str, repo: Path
) -> Path:
    """Export a loaded text checkpoint as the next version of `name` in `repo`."""
    spec = checkpoint_text_preprocessing(ckpt)
    missing = {"parity_tokens", "task"} - set(ckpt)
    if missing:
        raise CheckpointError(f"the text checkpoint lacks {', '.join(sorted(missing))}")
    x = ckpt["parity_tokens"].numpy().astype(np.int64)  # held-out rows, (N, max_length)
    if x.shape[1] != spec.max_length:
        raise CheckpointError(
            f"parity rows have {x.shape[1]} ids, not max_length {spec.max_length}"
        )
    lengths = sorted({*(n for n in SEQUENCE_CHECKS if n < spec.max_length), spec.max_length})
    version = next_version(repo, name)
    with tempfile.TemporaryDirectory(prefix="export-") as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        opset = export_onnx(model, torch.from_numpy(x), onnx_path)
        check_graph(onnx_path, len(ckpt["labels"]))
        diff = parity_grid(model, onnx_path, x, lengths)
        manifest = build_manifest(
            ckpt, name, version, spec, sha256_file(onnx_path), opset, diff, len(x), lengths
        )
        target = write_version(repo, onnx_path, manifest)
    print(
        f"exported {name} version {version} to {target} (opset {opset}, parity max abs diff "
        f"{diff:.2e} on {len(x)} held-out rows at {lengths} tokens and batch sizes "
        f"{[*DYNAMIC_BATCH_CHECKS, len(x)]}, argmax equal)"
    )
    return target
