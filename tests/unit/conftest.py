"""Small real training runs shared by the training and export tests (seconds on 2 cores)."""

import random
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


@pytest.fixture(scope="session")
def cnn_export(cnn_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny CNN exported once as model "m" of a fresh repository: its version folder
    (<repo>/m/1). Read it; tests that change a graph work on a copy."""
    from training.export import export_checkpoint

    return export_checkpoint(cnn_run / "checkpoint.pt", "m", tmp_path_factory.mktemp("cnn-exports"))


@pytest.fixture(scope="session")
def lstm_export(lstm_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny row-LSTM exported once as model "m" of a fresh repository (<repo>/m/1)."""
    from training.export import export_checkpoint

    return export_checkpoint(
        lstm_run / "checkpoint.pt", "m", tmp_path_factory.mktemp("lstm-exports")
    )


def write_topics_csv(path: Path, per_topic: int = 40, seed: int = 1) -> Path:
    """A small `text,label` CSV from the synthetic topics generator (a different seed from the
    bundled file, so tests do not lean on it)."""
    from training.data.topics import csv_text, generate_rows

    path.write_text(csv_text(generate_rows(seed=seed, per_topic=per_topic)), encoding="utf-8")
    return path


def write_pairs_csv(path: Path, rows: int = 60) -> Path:
    """A small Quora-format CSV: a question paired with itself reworded (1) or with another (0)."""
    from training.data.topics import TOPICS, headline

    rng = random.Random(0)
    lines = ["id,qid1,qid2,question1,question2,is_duplicate"]
    for i in range(rows):
        first = headline(rng, TOPICS[i % 4])
        duplicate = i % 2
        second = first.lower() + " ?" if duplicate else headline(rng, TOPICS[(i + 1) % 4])
        lines.append(f'{i},{2 * i},{2 * i + 1},"{first}","{second}",{duplicate}')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def tiny_text_run(out: Path, csv_path: Path, **overrides: object) -> Path:
    settings: dict[str, object] = {
        "arch": "bilstm-text",
        "dataset": str(csv_path),
        "epochs": 2,
        "lr": 5e-3,
        "batch_size": 16,
        "max_length": 12,
        "min_count": 1,
        "out": str(out),
    }
    settings.update(overrides)
    run_training(TrainConfig(**settings))  # type: ignore[arg-type]
    return out


@pytest.fixture(scope="session")
def text_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("text")
    return tiny_text_run(folder / "run", write_topics_csv(folder / "topics.csv"))


@pytest.fixture(scope="session")
def text_export(text_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny text model exported once (the dynamo export takes seconds): its version folder."""
    from training.export import export_checkpoint

    return export_checkpoint(
        text_run / "checkpoint.pt", "topics", tmp_path_factory.mktemp("text-exports")
    )
