"""Text models end to end at a tiny size: train on a CSV, checkpoint, export with dynamic batch
and token axes, and prove onnxruntime equals torch at several sequence lengths."""

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from modelrepo.layout import open_version
from modelrepo.text import encode_batch
from tests.unit.conftest import tiny_text_run, write_pairs_csv
from training.checkpoint import checkpoint_text_preprocessing, load_checkpoint, rebuild_model
from training.config import ConfigError, TrainConfig
from training.data import DatasetError, load_text_dataset
from training.export import PARITY_TOLERANCE, ExportError, export_checkpoint
from training.tasks.text import check_graph
from training.train import run_training


def onnx_logits(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def test_text_run_writes_checkpoint_metrics_and_reports(text_run: Path) -> None:
    metrics = json.loads((text_run / "metrics.json").read_text())
    assert metrics["task"] == "text-classification" and metrics["epochs"] == 2
    assert metrics["train_samples"] + metrics["test_samples"] == 160  # 4 topics x 40 rows
    assert 30 <= metrics["test_samples"] <= 34  # 20% of each (noisy-labelled) class
    for name in ("curves.png", "confusion_matrix.png", "misclassified.txt", "config.json"):
        assert (text_run / name).is_file()
    ckpt = load_checkpoint(text_run / "checkpoint.pt")
    spec = checkpoint_text_preprocessing(ckpt)
    assert spec.max_length == 12 and spec.vocabulary[:3] == ["<pad>", "<unk>", "<sep>"]
    assert ckpt["model_kwargs"]["vocab_size"] == len(spec.vocabulary)
    parity = ckpt["parity_tokens"]
    assert parity.dtype == torch.int64 and tuple(parity.shape) == (32, 12)


def test_checkpoint_rebuilds_the_text_model(text_run: Path) -> None:
    ckpt = load_checkpoint(text_run / "checkpoint.pt")
    model = rebuild_model(ckpt)
    spec = checkpoint_text_preprocessing(ckpt)
    data = load_text_dataset(str(text_run.parent / "topics.csv"))
    with torch.no_grad():
        predictions = model(torch.from_numpy(encode_batch(data.test_texts, spec))).argmax(1)
    accuracy = float((predictions.numpy() == data.test_labels).mean())
    assert accuracy == pytest.approx(ckpt["metrics"]["final_test_accuracy"])


def test_text_training_is_deterministic(text_run: Path, tmp_path: Path) -> None:
    again = tiny_text_run(tmp_path / "again", text_run.parent / "topics.csv")
    first = load_checkpoint(text_run / "checkpoint.pt")
    second = load_checkpoint(again / "checkpoint.pt")
    assert first["preprocessing"] == second["preprocessing"]
    for key, tensor in first["state_dict"].items():
        assert torch.equal(tensor, second["state_dict"][key]), key


def test_export_has_dynamic_batch_and_token_axes(text_export: Path) -> None:
    manifest = open_version(text_export.parent.parent, "topics", 1).manifest
    assert manifest.task == "text-classification" and manifest.arch == "bilstm-text"
    assert (manifest.input.dtype, manifest.input.layout, manifest.input.shape) == (
        "int64", "NT", [-1, -1]
    )  # fmt: skip
    assert manifest.export.parity_sequence_lengths == [1, 7, 12]
    assert manifest.export.parity_max_abs_diff <= PARITY_TOLERANCE
    assert manifest.export.parity_argmax_equal
    assert manifest.text_preprocessing.max_length == 12
    graph = onnx.load(str(text_export / "model.onnx")).graph
    tensor_type = graph.input[0].type.tensor_type
    assert tensor_type.elem_type == onnx.TensorProto.INT64
    assert all(d.dim_param and not d.dim_value for d in tensor_type.shape.dim)
    assert len(tensor_type.shape.dim) == 2


@pytest.mark.parametrize("length", [1, 5, 12, 30])
@pytest.mark.parametrize("batch", [1, 17])
def test_onnxruntime_equals_torch_at_any_length(
    text_run: Path, text_export: Path, length: int, batch: int
) -> None:
    model = rebuild_model(load_checkpoint(text_run / "checkpoint.pt"))
    vocab = load_checkpoint(text_run / "checkpoint.pt")["model_kwargs"]["vocab_size"]
    x = np.random.default_rng(length * 100 + batch).integers(0, vocab, (batch, length))
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    actual = onnx_logits(text_export / "model.onnx", x)
    assert actual.shape == (batch, 4)
    np.testing.assert_allclose(actual, expected, atol=PARITY_TOLERANCE)


def test_check_graph_rejects_a_fixed_token_axis(text_export: Path, tmp_path: Path) -> None:
    graph_model = onnx.load(str(text_export / "model.onnx"))
    graph_model.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 12
    fixed = tmp_path / "fixed.onnx"
    onnx.save(graph_model, str(fixed))
    with pytest.raises(ExportError, match="expected \\[batch, tokens\\], both dynamic"):
        check_graph(fixed, 4)


def test_pair_model_trains_and_exports(tmp_path: Path) -> None:
    run = tiny_text_run(tmp_path / "run", write_pairs_csv(tmp_path / "q.csv"), epochs=1)
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert ckpt["task"] == "text-pair-classification"
    assert ckpt["labels"] == ["not-duplicate", "duplicate"]
    assert (ckpt["parity_tokens"] == 2).sum(dim=1).tolist() == [1] * len(ckpt["parity_tokens"])
    target = export_checkpoint(run / "checkpoint.pt", "pairs", tmp_path / "exports")
    manifest = open_version(tmp_path / "exports", "pairs", 1).manifest
    assert manifest.task == "text-pair-classification"
    assert manifest.export.parity_max_abs_diff <= PARITY_TOLERANCE
    assert onnx_logits(target / "model.onnx", np.ones((3, 9), np.int64)).shape == (3, 2)


def test_text_and_image_data_do_not_mix(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="unknown text data set 'mnist-5k'"):
        run_training(TrainConfig(arch="bilstm-text", out=str(tmp_path / "a")))
    with pytest.raises(ConfigError, match="reads images but text-topics is text"):
        run_training(TrainConfig(arch="mnist-cnn", dataset="text-topics", out=str(tmp_path / "b")))
    with pytest.raises(ConfigError, match="augmentation applies to images only"):
        run_training(
            TrainConfig(
                arch="bilstm-text", dataset="text-topics", augment=["flip"], out=str(tmp_path / "c")
            )
        )
