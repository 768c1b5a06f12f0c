"""Small real training runs shared by the training and export tests (seconds on 2 cores)."""

from pathlib import Path

import pytest

from training.config import TrainConfig
from training.train import run_training


def tiny_run(out: Path, arch: str, **overrides: object) -> Path:
    settings: dict[str, object] = {
        "arch": arch,
        "dataset": "digits",
        "epochs": 3,
        "lr": 2e-3,
        "batch_size": 16,
        "limit": 200,
        "out": str(out),
    }
    settings.update(overrides)
    run_training(TrainConfig(**settings))  # type: ignore[arg-type]
    return out


@pytest.fixture(scope="session")
def cnn_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("cnn"), "mnist-cnn")


@pytest.fixture(scope="session")
def lstm_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("lstm"), "row-lstm")
