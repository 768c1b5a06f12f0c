"""The exported graph's names, its checks and the torch-vs-onnxruntime parity check: shared by
the export driver (training.export) and the tasks (training.tasks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from modelrepo.manifest import ExplainOutputs
from training.explain_outputs import ExplainModel, output_names

PARITY_TOLERANCE = 1e-4
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
DYNAMIC_BATCH_CHECKS = (1, 17)


class ExportError(RuntimeError):
    """The exported graph is not a faithful, self-contained copy of the checkpoint."""


def dims(value_info: onnx.ValueInfoProto) -> list[int | str]:
    """A graph input's or output's dimensions: names for symbolic axes, sizes for fixed ones."""
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
    """The graph's (first) output is OUTPUT_NAME, [symbolic batch, num_classes]."""
    if graph.output[0].name != OUTPUT_NAME:
        raise ExportError(f"the first output is {graph.output[0].name!r}, not {OUTPUT_NAME!r}")
    out_dims = dims(graph.output[0])
    if not isinstance(out_dims[0], str) or out_dims[1:] != [num_classes]:
        raise ExportError(f"output shape is {out_dims}, expected [batch, {num_classes}]")


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


def check_output_names(graph: onnx.GraphProto, explain: ExplainOutputs | None) -> None:
    """The graph's outputs are exactly the logits, then the explain outputs, in that order."""
    names = [o.name for o in graph.output]
    expected = [OUTPUT_NAME, *output_names(explain)]
    if names != expected:
        raise ExportError(f"the graph's outputs are {names}, expected {expected}")


def check_explain_outputs(graph: onnx.GraphProto, explain: ExplainOutputs) -> None:
    """float32 outputs: each activation [the input's batch axis, C, H, W], the filters their
    fixed (out, in, kh, kw)."""
    batch = dims(graph.input[0])[0]
    outputs = {o.name: o for o in graph.output}
    expected: dict[str, list[int | str]] = {a.name: [batch, *a.shape] for a in explain.activations}
    if explain.filters is not None:
        expected[explain.filters.name] = list(explain.filters.shape)
    for name, shape in expected.items():
        value = outputs[name]
        if value.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            raise ExportError(f"output {name!r} is not float32")
        if dims(value) != shape:
            raise ExportError(f"output {name!r} has shape {dims(value)}, expected {shape}")


def explain_parity(
    model: ExplainModel,
    session: ort.InferenceSession,
    x: np.ndarray,
    explain: ExplainOutputs,
) -> dict[str, float]:
    """max |torch - onnxruntime| of each explain output (activations, then filters) for `x`."""
    names = output_names(explain)
    with torch.no_grad():
        _, *activations = model(torch.from_numpy(x))
    expected = [a.numpy() for a in activations]
    if explain.filters is not None:
        expected.append(model.filters())
    actual = session.run(names, {INPUT_NAME: x})
    diffs: dict[str, float] = {}
    for name, got, want in zip(names, actual, expected, strict=True):
        if got.shape != want.shape:
            raise ExportError(f"onnxruntime's {name} has shape {got.shape}, torch's {want.shape}")
        diffs[name] = float(np.abs(got - want).max())
    return diffs
