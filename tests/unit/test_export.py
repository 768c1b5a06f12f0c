"""Export: a real checkpoint becomes a self-contained ONNX file equal to torch at any batch size."""

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from modelrepo.layout import list_versions, open_version
from modelrepo.manifest import Manifest
from training.checkpoint import load_checkpoint, rebuild_model
from training.export import PARITY_TOLERANCE, ExportError, export_checkpoint
from training.onnx_checks import parity
from training.tasks.image import check_graph


def run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


@pytest.mark.parametrize(
    ("fixture", "run_fixture"), [("cnn_export", "cnn_run"), ("lstm_export", "lstm_run")]
)
def test_export_parity_and_dynamic_batch(
    fixture: str, run_fixture: str, request: pytest.FixtureRequest
) -> None:
    target: Path = request.getfixturevalue(fixture)  # export_checkpoint(...) into a fresh repo
    run: Path = request.getfixturevalue(run_fixture)
    repo = target.parents[1]
    assert target == repo / "m" / "1"
    assert sorted(p.name for p in target.iterdir()) == ["model.json", "model.onnx"]
    version = open_version(repo, "m", 1)  # validates the manifest and the sha256
    manifest = version.manifest
    assert manifest.export.parity_max_abs_diff <= PARITY_TOLERANCE
    assert manifest.export.parity_argmax_equal and manifest.export.parity_batch_size == 32
    assert manifest.export.opset >= 17
    assert manifest.labels == [str(i) for i in range(10)]

    model = rebuild_model(load_checkpoint(run / "checkpoint.pt"))
    rng = np.random.default_rng(1)
    for batch in (1, 17):
        x = rng.standard_normal((batch, 1, 8, 8)).astype(np.float32)
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        actual = run_onnx(version.model_path, x)
        assert actual.shape == (batch, 10)
        np.testing.assert_allclose(actual, expected, atol=PARITY_TOLERANCE)


def test_two_lstm_exports_in_one_process_both_keep_a_dynamic_batch(
    lstm_run: Path, tmp_path: Path
) -> None:
    # torch's dynamo exporter has been seen to fix the batch axis of a second LSTM export.
    repo = tmp_path / "exports"
    for _ in range(2):
        export_checkpoint(lstm_run / "checkpoint.pt", "lstm", repo)
    for v in (1, 2):
        graph = onnx.load(str(repo / "lstm" / str(v) / "model.onnx")).graph
        batch_dim = graph.input[0].type.tensor_type.shape.dim[0]
        assert batch_dim.dim_param and not batch_dim.dim_value
        assert run_onnx(
            repo / "lstm" / str(v) / "model.onnx", np.zeros((5, 1, 8, 8), np.float32)
        ).shape == (5, 10)


def test_versions_count_up_and_never_overwrite(cnn_run: Path, tmp_path: Path) -> None:
    repo = tmp_path / "exports"
    first = export_checkpoint(cnn_run / "checkpoint.pt", "digits", repo)
    before = (first / "model.json").read_text()
    second = export_checkpoint(cnn_run / "checkpoint.pt", "digits", repo)
    assert (first.name, second.name) == ("1", "2")
    assert list_versions(repo, "digits") == [1, 2]
    assert (first / "model.json").read_text() == before
    assert Manifest.read(second / "model.json").version == 2
    assert json.loads(before)["version"] == 1


def test_check_graph_rejects_a_fixed_batch_axis(cnn_export: Path, tmp_path: Path) -> None:
    target = cnn_export
    graph_model = onnx.load(str(target / "model.onnx"))
    graph_model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 32
    fixed = tmp_path / "fixed.onnx"
    onnx.save(graph_model, str(fixed))
    with pytest.raises(ExportError, match="input shape is \\[32, 1, 8, 8\\]"):
        check_graph(fixed, (1, 8, 8), 10)


def test_parity_detects_a_different_model(cnn_run: Path, cnn_export: Path) -> None:
    target = cnn_export
    model = rebuild_model(load_checkpoint(cnn_run / "checkpoint.pt"))
    head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        head.bias.add_(1.0)  # a checkpoint that no longer matches the file
    x = np.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype(np.float32)
    diff, _ = parity(model, target / "model.onnx", x)
    assert diff == pytest.approx(1.0, abs=1e-3)


def test_export_refuses_a_bad_name(cnn_run: Path, tmp_path: Path) -> None:
    from modelrepo.layout import RepositoryError

    with pytest.raises(RepositoryError, match="invalid model name"):
        export_checkpoint(cnn_run / "checkpoint.pt", "../evil", tmp_path / "exports")
    assert not (tmp_path / "evil").exists()
