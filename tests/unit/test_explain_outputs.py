"""The explain outputs: which modules they come from, and a CNN's export giving them after the
logits, equal to torch's, with the logits alone still served as before."""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from modelrepo.layout import open_version
from training.checkpoint import load_checkpoint, rebuild_model
from training.explain_outputs import ExplainLayers, ExplainModel, find_explain_layers
from training.models import build_model
from training.onnx_checks import PARITY_TOLERANCE, ExportError
from training.tasks.base import ExportPlan
from training.tasks.image import ImageTask, check_graph, prove_explain_parity

# The tiny mnist-cnn of the cnn_run fixture, on 8x8 digits.
CNN_ACTIVATIONS = [
    ("activation_1", "features.1", [32, 8, 8]),
    ("activation_2", "features.4", [64, 4, 4]),
]
CNN_FILTERS = ("filters", "features.0", [32, 1, 5, 5])


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def conv(model: nn.Module, path: str) -> nn.Conv2d:
    module = model.get_submodule(path)
    assert isinstance(module, nn.Conv2d)
    return module


def hooked(model: nn.Module, paths: list[str], x: np.ndarray) -> list[np.ndarray]:
    """The outputs of the modules at `paths` in one torch forward, by plain forward hooks."""
    seen: dict[str, torch.Tensor] = {}
    handles = [
        model.get_submodule(p).register_forward_hook(
            lambda _m, _i, out, p=p: seen.__setitem__(p, out.detach().clone())
        )
        for p in paths
    ]
    with torch.no_grad():
        model(torch.from_numpy(x))
    for handle in handles:
        handle.remove()
    return [seen[p].numpy() for p in paths]


# --- Finding the layers (no export) -----------------------------------------------------------


@pytest.mark.parametrize(
    ("arch", "activations", "filters"),
    [
        ("mnist-cnn", ("features.1", "features.4"), "features.0"),
        ("fashion-cnn", ("features.1", "features.3", "features.5"), "features.0"),
        # conv, BatchNorm, ReLU twice per block: BatchNorm between conv and ReLU is allowed.
        ("cifar-vgg", tuple(f"features.{b}.{i}" for b in range(3) for i in (2, 5)), "features.0.0"),
    ],
)
def test_the_bundled_cnns_blocks_are_found(
    arch: str, activations: tuple[str, ...], filters: str
) -> None:
    model = build_model(arch, in_channels=1, image_size=(8, 8), num_classes=10)
    assert find_explain_layers(model) == ExplainLayers(activations, filters)


def test_models_without_a_conv_have_no_explain_layers() -> None:
    model = build_model("row-lstm", in_channels=1, image_size=(8, 8), num_classes=10)
    assert find_explain_layers(model) is None


def test_any_elementwise_activation_counts_and_only_batchnorm_may_sit_between() -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.BatchNorm2d(4),
        nn.LeakyReLU(),  # 1: after BatchNorm
        nn.Conv2d(4, 4, 3),
        nn.MaxPool2d(2),
        nn.ReLU(),  # not a block output: pooling came between
        nn.Conv2d(4, 4, 1),
        nn.GELU(),  # 2
        nn.Sequential(nn.Conv2d(4, 4, 1), nn.Sequential(nn.SiLU())),  # 3: nesting does not matter
        nn.Flatten(),
    )
    assert find_explain_layers(model) == ExplainLayers(("2", "7", "8.1.0"), "0")


def test_a_shared_activation_module_is_refused() -> None:
    relu = nn.ReLU()  # one module run after both convolutions: no single activation map
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), relu, nn.Conv2d(2, 2, 3, padding=1), relu)
    layers = find_explain_layers(model)
    assert layers == ExplainLayers(("1",), "0")
    with pytest.raises(ValueError, match="1 ran 2 times"):
        ExplainModel(model, layers)(torch.zeros(1, 1, 4, 4))


def test_the_wrapper_leaves_the_model_as_it_was() -> None:
    model = build_model("mnist-cnn", in_channels=1, image_size=(8, 8), num_classes=10).eval()
    layers = find_explain_layers(model)
    assert layers is not None
    x = torch.randn(2, 1, 8, 8)
    logits, *activations = ExplainModel(model, layers)(x)
    assert [tuple(a.shape) for a in activations] == [(2, 32, 8, 8), (2, 64, 4, 4)]
    assert torch.equal(logits, model(x))
    assert all(not m._forward_hooks for m in model.modules())  # the hooks went with the call


# --- The exported CNN -------------------------------------------------------------------------


def test_the_cnn_manifest_names_its_explain_outputs(cnn_export: Path) -> None:
    manifest = open_version(cnn_export.parents[1], "m", 1).manifest
    assert manifest.explain is not None and manifest.explain.filters is not None
    assert [(a.name, a.layer, a.shape) for a in manifest.explain.activations] == CNN_ACTIVATIONS
    filters = manifest.explain.filters
    assert (filters.name, filters.layer, filters.shape) == CNN_FILTERS
    graph = onnx.load(str(cnn_export / "model.onnx")).graph
    assert [o.name for o in graph.output] == ["logits", "activation_1", "activation_2", "filters"]


def test_onnxruntime_activations_equal_torch_hooks_at_any_batch(
    cnn_run: Path, cnn_export: Path
) -> None:
    model = rebuild_model(load_checkpoint(cnn_run / "checkpoint.pt"))
    names = [name for name, _, _ in CNN_ACTIVATIONS]
    rng = np.random.default_rng(3)
    for batch in (1, 5):
        x = rng.standard_normal((batch, 1, 8, 8)).astype(np.float32)
        actual = session(cnn_export / "model.onnx").run(names, {"input": x})
        expected = hooked(model, [layer for _, layer, _ in CNN_ACTIVATIONS], x)
        for got, want, (_, _, shape) in zip(actual, expected, CNN_ACTIVATIONS, strict=True):
            assert got.shape == (batch, *shape)
            np.testing.assert_allclose(got, want, rtol=0, atol=PARITY_TOLERANCE)


def test_onnxruntime_filters_equal_the_first_conv_weight(cnn_run: Path, cnn_export: Path) -> None:
    model = rebuild_model(load_checkpoint(cnn_run / "checkpoint.pt"))
    weight = conv(model, "features.0").weight.detach().numpy()
    x = np.zeros((3, 1, 8, 8), np.float32)
    (filters,) = session(cnn_export / "model.onnx").run(["filters"], {"input": x})
    assert filters.shape == (32, 1, 5, 5)  # no batch axis
    np.testing.assert_array_equal(filters, weight)


def test_asking_for_the_logits_alone_gives_the_same_logits(cnn_run: Path, cnn_export: Path) -> None:
    model = rebuild_model(load_checkpoint(cnn_run / "checkpoint.pt"))
    x = np.random.default_rng(4).standard_normal((7, 1, 8, 8)).astype(np.float32)
    sess = session(cnn_export / "model.onnx")
    (alone,) = sess.run(["logits"], {"input": x})
    everything = sess.run(None, {"input": x})
    np.testing.assert_array_equal(alone, everything[0])
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(alone, expected, rtol=0, atol=PARITY_TOLERANCE)


def test_the_lstm_exports_only_its_logits(lstm_export: Path) -> None:
    assert open_version(lstm_export.parents[1], "m", 1).manifest.explain is None
    graph = onnx.load(str(lstm_export / "model.onnx")).graph
    assert [o.name for o in graph.output] == ["logits"]


# --- The export's checks refuse a graph or weights that differ --------------------------------


def _plan(cnn_run: Path) -> tuple[nn.Module, ExportPlan]:
    ckpt = load_checkpoint(cnn_run / "checkpoint.pt")
    model = rebuild_model(ckpt)
    return model, ImageTask().export_plan(ckpt, model)


def test_check_graph_rejects_an_activation_with_a_fixed_batch_axis(
    cnn_run: Path, cnn_export: Path, tmp_path: Path
) -> None:
    _, plan = _plan(cnn_run)
    graph_model = onnx.load(str(cnn_export / "model.onnx"))
    graph_model.graph.output[2].type.tensor_type.shape.dim[0].dim_value = 32  # activation_2
    fixed = tmp_path / "fixed.onnx"
    onnx.save(graph_model, str(fixed))
    with pytest.raises(ExportError, match="output 'activation_2' has shape \\[32, 64, 4, 4\\]"):
        check_graph(fixed, (1, 8, 8), 10, plan.explain)


def test_check_graph_rejects_missing_explain_outputs(
    cnn_run: Path, cnn_export: Path, tmp_path: Path
) -> None:
    _, plan = _plan(cnn_run)
    graph_model = onnx.load(str(cnn_export / "model.onnx"))
    del graph_model.graph.output[3]  # filters
    fewer = tmp_path / "fewer.onnx"
    onnx.save(graph_model, str(fewer))
    fewer_names = "\\['logits', 'activation_1', 'activation_2'\\]"
    with pytest.raises(ExportError, match=f"outputs are {fewer_names}, expected"):
        check_graph(fewer, (1, 8, 8), 10, plan.explain)


def test_explain_parity_is_proven_and_refuses_filters_that_differ(
    cnn_run: Path, cnn_export: Path
) -> None:
    model, plan = _plan(cnn_run)
    assert plan.explain is not None
    sess = session(cnn_export / "model.onnx")
    assert prove_explain_parity(model, sess, plan.inputs, plan.explain) <= PARITY_TOLERANCE
    with torch.no_grad():
        conv(model, "features.0").weight.view(-1)[0] += 1e-6  # the smallest of changes
    with pytest.raises(ExportError, match="the graph's filters differ from the conv's weight"):
        prove_explain_parity(model, sess, plan.inputs, plan.explain)


def test_explain_parity_refuses_an_activation_that_differs(cnn_run: Path, cnn_export: Path) -> None:
    model, plan = _plan(cnn_run)
    assert plan.explain is not None
    bias = conv(model, "features.3").bias  # the second conv: the filters stay unchanged
    assert bias is not None
    with torch.no_grad():
        bias.add_(1.0)
    with pytest.raises(ExportError, match="batch size 32 the graph's activation_2 differs"):
        prove_explain_parity(model, session(cnn_export / "model.onnx"), plan.inputs, plan.explain)
