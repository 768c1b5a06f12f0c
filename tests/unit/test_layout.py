"""Repository layout: version numbering, atomic publication, never overwriting, sha256 checks."""

import json
from pathlib import Path

import pytest

from modelrepo.layout import (
    RepositoryError,
    list_models,
    list_versions,
    next_version,
    open_version,
    sha256_file,
    write_version,
)
from modelrepo.manifest import Manifest
from tests.unit.test_manifest import good


def publish(repo: Path, tmp_path: Path, version: int, payload: bytes = b"onnx bytes") -> Path:
    onnx_file = tmp_path / f"src-{version}.onnx"
    onnx_file.write_bytes(payload)
    data = good()
    data.update(version=version, sha256=sha256_file(onnx_file))
    return write_version(repo, onnx_file, Manifest.model_validate(data))


def test_versions_count_up_from_one(tmp_path: Path) -> None:
    repo = tmp_path / "exports"
    assert next_version(repo, "digits-cnn") == 1
    publish(repo, tmp_path, 1)
    publish(repo, tmp_path, 2)
    assert list_versions(repo, "digits-cnn") == [1, 2]
    assert next_version(repo, "digits-cnn") == 3
    assert list_models(repo) == ["digits-cnn"]


def test_non_integer_folders_are_ignored(tmp_path: Path) -> None:
    repo = tmp_path / "exports"
    publish(repo, tmp_path, 1)
    for junk in (".staging-abc", "latest", "01", "2.5"):
        (repo / "digits-cnn" / junk).mkdir()
    assert list_versions(repo, "digits-cnn") == [1]
    assert next_version(repo, "digits-cnn") == 2


def test_existing_version_is_never_overwritten(tmp_path: Path) -> None:
    repo = tmp_path / "exports"
    target = publish(repo, tmp_path, 1, b"first")
    with pytest.raises(RepositoryError, match="never overwritten"):
        publish(repo, tmp_path, 1, b"second")
    assert (target / "model.onnx").read_bytes() == b"first"
    assert not [p for p in (repo / "digits-cnn").iterdir() if p.name.startswith(".staging")]


def test_open_version_checks_sha256(tmp_path: Path) -> None:
    repo = tmp_path / "exports"
    target = publish(repo, tmp_path, 1)
    assert open_version(repo, "digits-cnn", 1).manifest.version == 1
    (target / "model.onnx").write_bytes(b"tampered")
    with pytest.raises(RepositoryError, match=r"sha256 .* differs"):
        open_version(repo, "digits-cnn", 1)


def test_open_version_checks_the_folder_matches_the_manifest(tmp_path: Path) -> None:
    repo = tmp_path / "exports"
    target = publish(repo, tmp_path, 1)
    moved = target.parent / "7"
    target.rename(moved)
    with pytest.raises(RepositoryError, match="says it is digits-cnn version 1"):
        open_version(repo, "digits-cnn", 7)


def test_open_version_reports_a_broken_manifest(tmp_path: Path) -> None:
    repo = tmp_path / "exports"
    target = publish(repo, tmp_path, 1)
    data = json.loads((target / "model.json").read_text())
    del data["labels"]
    (target / "model.json").write_text(json.dumps(data))
    with pytest.raises(RepositoryError, match="labels"):
        open_version(repo, "digits-cnn", 1)


def test_write_refuses_a_manifest_for_other_bytes(tmp_path: Path) -> None:
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"abc")
    with pytest.raises(RepositoryError, match="sha256 differs"):
        write_version(tmp_path / "exports", onnx_file, Manifest.model_validate(good()))


def test_bad_model_names_never_become_paths(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match="invalid model name"):
        list_versions(tmp_path, "../../etc")


def test_missing_repository_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match="does not exist"):
        list_models(tmp_path / "nowhere")
