"""The model repository on disk: `<root>/<model-name>/<version>/{model.onnx, model.json}`.

Versions are positive integers; anything else in a model folder (a half-written temporary
folder, a README) is ignored. A version, once written, is never overwritten.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from modelrepo.manifest import Manifest, ManifestError, is_valid_model_name

MODEL_FILE = "model.onnx"
MANIFEST_FILE = "model.json"


class RepositoryError(RuntimeError):
    """The repository is missing something or a write would break its rules."""


@dataclass(frozen=True)
class ModelVersion:
    """One version folder of the repository, with its validated manifest."""

    path: Path
    manifest: Manifest

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_name(name: str) -> None:
    if not is_valid_model_name(name):
        raise RepositoryError(
            f"invalid model name {name!r}: use 1-64 lower-case letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )


def list_models(root: Path) -> list[str]:
    """Model names in the repository that have at least one version folder, sorted."""
    if not root.is_dir():
        raise RepositoryError(f"model repository {root} does not exist or is not a folder")
    return sorted(
        d.name
        for d in root.iterdir()
        if d.is_dir() and is_valid_model_name(d.name) and list_versions(root, d.name)
    )


def list_versions(root: Path, name: str) -> list[int]:
    """Integer version folders of `name`, ascending; [] when the model does not exist."""
    _check_name(name)
    model_dir = root / name
    if not model_dir.is_dir():
        return []
    return sorted(
        int(d.name)
        for d in model_dir.iterdir()
        if d.is_dir() and d.name.isdigit() and not d.name.startswith("0")
    )


def next_version(root: Path, name: str) -> int:
    versions = list_versions(root, name)
    return versions[-1] + 1 if versions else 1


def open_version(
    root: Path, name: str, version: int, *, verify_sha256: bool = True
) -> ModelVersion:
    """Read and check one version: the manifest validates, names itself correctly, and the
    ONNX file exists with the sha256 the manifest records."""
    _check_name(name)
    path = root / name / str(version)
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.is_file():
        raise RepositoryError(f"{path}: no {MANIFEST_FILE}")
    try:
        manifest = Manifest.read(manifest_path)
    except ManifestError as exc:
        raise RepositoryError(str(exc)) from None
    if (manifest.name, manifest.version) != (name, version):
        raise RepositoryError(
            f"{manifest_path}: says it is {manifest.name} version {manifest.version}, "
            f"but lies in the folder of {name} version {version}"
        )
    model_path = path / MODEL_FILE
    if not model_path.is_file():
        raise RepositoryError(f"{path}: no {MODEL_FILE}")
    if verify_sha256:
        actual = sha256_file(model_path)
        if actual != manifest.sha256:
            raise RepositoryError(
                f"{model_path}: sha256 {actual} differs from the manifest's {manifest.sha256} "
                "(the file is corrupt or was replaced)"
            )
    return ModelVersion(path=path, manifest=manifest)


def write_version(root: Path, onnx_file: Path, manifest: Manifest) -> Path:
    """Publish a new version folder atomically and return its path.

    The files are written to a temporary folder beside the target and renamed into place, so a
    reader never sees half a version; a version that already exists is never replaced.
    """
    _check_name(manifest.name)
    if manifest.sha256 != sha256_file(onnx_file):
        raise RepositoryError(f"{onnx_file}: sha256 differs from the manifest being written")
    model_dir = root / manifest.name
    model_dir.mkdir(parents=True, exist_ok=True)
    target = model_dir / str(manifest.version)
    if target.exists():
        raise RepositoryError(f"{target} already exists; versions are never overwritten")
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=model_dir))
    try:
        shutil.copyfile(onnx_file, staging / MODEL_FILE)
        (staging / MANIFEST_FILE).write_text(manifest.to_json(), encoding="utf-8")
        staging.chmod(0o755)
        try:
            # NOTE: rename() onto an existing non-empty folder fails, which is what keeps a
            # concurrent writer of the same version from replacing ours (or us theirs).
            staging.rename(target)
        except OSError as exc:
            raise RepositoryError(
                f"{target} was created by someone else meanwhile; versions are never overwritten"
            ) from exc
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target
