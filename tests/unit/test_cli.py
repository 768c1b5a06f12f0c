"""`python -m training` as a user runs it: clear one-line errors and exit code 2, no tracebacks."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "training", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_list() -> None:
    result = cli("list")
    assert result.returncode == 0
    assert "mnist-cnn" in result.stdout and "fashion-mnist" in result.stdout
    assert "bilstm-text" in result.stdout and "text-topics" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--arch", "resnet"], "unknown architecture 'resnet'"),
        (["train", "--dataset", "imagenet"], "imagenet"),
        (["train", "--dataset", "mnist", "--data-dir", "{tmp}"], "train-images-idx3-ubyte"),
        (["train", "--epochs", "0"], "epochs must be at least 1"),
        (["train", "--augment", "rotate"], "unknown augmentation"),
        (["train", "--config", "{tmp}/missing.toml"], "cannot read config file"),
        (["train", "--arch", "bilstm-text"], "unknown text data set 'mnist-5k'"),
        (["train", "--arch", "bilstm-text", "--dataset", "{tmp}/none.csv"], "none.csv: no such"),
        (["train", "--arch", "bilstm-text", "--max-length", "1"], "max_length must be at least 2"),
        (["train", "--dataset", "text-topics"], "mnist-cnn reads images but text-topics is text"),
        (["export", "{tmp}/none.pt", "--name", "x"], "does not exist"),
        (["export", "{tmp}/junk.pt", "--name", "x"], "is not a checkpoint"),
    ],
)
def test_user_errors_are_one_clear_line(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "junk.pt").write_bytes(b"\x80\x04not a checkpoint")
    result = cli(
        *[a.replace("{tmp}", str(tmp_path)) for a in args],
        "--out" if args[0] == "train" else "--repo",
        str(tmp_path / "out"),
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ")
    assert message in result.stderr


def test_train_and_export_from_the_command_line(tmp_path: Path) -> None:
    run = tmp_path / "run"
    trained = cli(
        "train", "--arch", "fashion-cnn", "--epochs", "1", "--limit", "64", "--out", str(run)
    )
    assert trained.returncode == 0, trained.stderr
    assert "epoch 1/1" in trained.stdout
    exported = cli(
        "export", str(run / "checkpoint.pt"), "--name", "f", "--repo", str(tmp_path / "exports")
    )
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "exports" / "f" / "1" / "model.onnx").is_file()
    assert not list(tmp_path.glob("exports/f/1/*.data"))  # self-contained


def test_train_and_export_a_text_model_from_the_command_line(tmp_path: Path) -> None:
    from tests.unit.conftest import write_topics_csv

    data = write_topics_csv(tmp_path / "news.csv", per_topic=15)
    run = tmp_path / "run"
    trained = cli(
        "train", "--arch", "bilstm-text", "--dataset", str(data), "--epochs", "1",
        "--max-length", "10", "--vocab-size", "50", "--min-count", "1", "--out", str(run),
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert "vocabulary 50, max_length 10" in trained.stdout
    exported = cli(
        "export", str(run / "checkpoint.pt"), "--name", "news", "--repo", str(tmp_path / "exports")
    )
    assert exported.returncode == 0, exported.stderr
    assert "at [1, 7, 10] tokens" in exported.stdout
    assert (tmp_path / "exports" / "news" / "1" / "model.onnx").is_file()
