"""Loading the model repository into onnxruntime: which versions, checked how, found by name.

Uses the bundled exports/ and, for anything broken, copies of it in tmp_path.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from modelrepo.layout import sha256_file
from modelrepo.preprocess import pixels_to_input
from service.core.errors import NotFound
from service.core.models import (
    CPU,
    CUDA,
    LoadedModel,
    ModelRegistry,
    StartupError,
    choose_providers,
    load_model,
    load_registry,
    resolve_specs,
)
from service.settings import ENV_PREFIX, ServiceSettings
from training.data import load_dataset

EXPORTS = Path(__file__).resolve().parents[2] / "exports"
BUNDLED = ["digits-cnn", "digits-lstm"]


def clear_service_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings built here must not pick up DIGITSERVE_ variables of the machine."""
    clear_service_env(monkeypatch)


def settings_for(repo: Path, **overrides: Any) -> ServiceSettings:
    # workers=1: the default (the CPU count) is refused on machines with more than 64 CPUs.
    return ServiceSettings(model_repo=repo, device="cpu", workers=1, **overrides)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A private copy of the bundled repository, free to break."""
    return Path(shutil.copytree(EXPORTS, tmp_path / "repo"))


def _later_versions(folder: str, names: list[str]) -> list[str]:
    """shutil.copytree's ignore: every version folder but 1."""
    return [n for n in names if n.isdigit() and n != "1"]  # only version folders are numbers


def edit_manifest(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


@pytest.fixture
def repo_with_v2(tmp_path: Path) -> Path:
    """A copy of the bundled models' version 1 alone, where digits-cnn also has version 2
    (version 1's files, renumbered): the version logic on versions the tests know, however
    many exports/ holds."""
    repo = Path(shutil.copytree(EXPORTS, tmp_path / "repo", ignore=_later_versions))
    shutil.copytree(repo / "digits-cnn" / "1", repo / "digits-cnn" / "2")
    edit_manifest(repo / "digits-cnn" / "2" / "model.json", lambda m: m.update(version=2))
    return repo


@pytest.fixture(scope="module")
def registry() -> ModelRegistry:
    """The bundled models, loaded once for the module (device auto: the CPU here)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        clear_service_env(monkeypatch)
        return load_registry(ServiceSettings(model_repo=EXPORTS, workers=1))


# ---------------------------------------------------------------------------------------------
# resolve_specs


def test_every_model_by_default() -> None:
    assert resolve_specs(settings_for(EXPORTS)) == [
        ("digits-cnn", 1),
        ("digits-cnn", 2),
        ("digits-lstm", 1),
        ("mnist-cnn", 1),
        ("mnist-cnn", 2),
        ("mnist-lstm", 1),
        ("text-topics", 1),
    ]


def test_named_models_keep_the_given_order() -> None:
    settings = settings_for(EXPORTS, models=["digits-lstm", "digits-cnn"])
    assert resolve_specs(settings) == [("digits-lstm", 1), ("digits-cnn", 1), ("digits-cnn", 2)]


def test_pinned_version() -> None:
    assert resolve_specs(settings_for(EXPORTS, models=["digits-lstm:1"])) == [("digits-lstm", 1)]


def test_all_versions_by_default(repo_with_v2: Path) -> None:
    assert resolve_specs(settings_for(repo_with_v2)) == [
        ("digits-cnn", 1),
        ("digits-cnn", 2),
        ("digits-lstm", 1),
        ("mnist-cnn", 1),
        ("mnist-lstm", 1),
        ("text-topics", 1),
    ]


def test_latest_versions_only(repo_with_v2: Path) -> None:
    settings = settings_for(repo_with_v2, versions="latest")
    assert resolve_specs(settings) == [
        ("digits-cnn", 2),
        ("digits-lstm", 1),
        ("mnist-cnn", 1),
        ("mnist-lstm", 1),
        ("text-topics", 1),
    ]


def test_pinning_beats_latest(repo_with_v2: Path) -> None:
    settings = settings_for(repo_with_v2, versions="latest", models=["digits-cnn:1"])
    assert resolve_specs(settings) == [("digits-cnn", 1)]


def test_duplicates_are_loaded_once(repo_with_v2: Path) -> None:
    settings = settings_for(repo_with_v2, models=["digits-cnn:2", "digits-cnn", "digits-cnn:1"])
    assert resolve_specs(settings) == [("digits-cnn", 2), ("digits-cnn", 1)]


def test_unknown_model_is_a_startup_error() -> None:
    with pytest.raises(StartupError, match=r"'nope' has no versions"):
        resolve_specs(settings_for(EXPORTS, models=["nope"]))


def test_invalid_model_name_is_a_startup_error() -> None:
    with pytest.raises(StartupError, match="invalid model name"):
        resolve_specs(settings_for(EXPORTS, models=["Digits_CNN"]))


def test_missing_version_is_a_startup_error() -> None:
    with pytest.raises(StartupError, match=r"digits-cnn version 7 is not in .* \(has \[1, 2\]\)"):
        resolve_specs(settings_for(EXPORTS, models=["digits-cnn:7"]))


def test_empty_repository_is_a_startup_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "not-a-version").mkdir()  # a model folder without versions does not count
    (empty / "not-a-version" / "latest").mkdir()
    with pytest.raises(StartupError, match="holds no model versions"):
        resolve_specs(settings_for(empty))


def test_missing_repository_is_a_startup_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(StartupError, match="does not exist"):
        resolve_specs(settings_for(missing))


def test_repository_that_is_a_file_is_a_startup_error(tmp_path: Path) -> None:
    file = tmp_path / "repo.txt"
    file.write_text("not a folder\n")
    with pytest.raises(StartupError, match="not a folder"):
        resolve_specs(settings_for(file))


# ---------------------------------------------------------------------------------------------
# load_registry on the bundled models


def test_registry_loads_every_bundled_model_on_the_cpu(registry: ModelRegistry) -> None:
    models = list(registry)
    assert [m.key for m in models] == [
        "digits-cnn:1",
        "digits-cnn:2",
        "digits-lstm:1",
        "mnist-cnn:1",
        "mnist-cnn:2",
        "mnist-lstm:1",
        "text-topics:1",
    ]
    for model in models:
        assert model.provider == CPU
        assert model.session.get_providers()[0] == CPU
        assert model.path == EXPORTS / model.name / str(model.version)
        assert model.manifest.sha256 == sha256_file(model.path / "model.onnx")


def test_registry_default_is_mnist_cnn_when_loaded_else_the_first_model(
    registry: ModelRegistry,
) -> None:
    assert registry.default_model == "mnist-cnn"
    resolved = registry.resolve(None, None)
    assert (resolved.name, resolved.version) == ("mnist-cnn", 2)  # its latest version
    only_8x8 = load_registry(settings_for(EXPORTS, models=["digits-lstm", "digits-cnn"]))
    assert only_8x8.default_model == "digits-lstm"


def test_registry_resolves_name_and_version(registry: ModelRegistry) -> None:
    lstm = registry.resolve("digits-lstm", 1)
    assert lstm.key == "digits-lstm:1"
    assert lstm.manifest.arch != registry.resolve("digits-cnn", 1).manifest.arch
    assert registry.resolve("digits-lstm", None) is lstm
    assert registry.resolve(None, 1) is registry.resolve("mnist-cnn", 1)
    assert registry.latest_version("digits-lstm") == 1


def test_unknown_model_is_404_listing_the_available(registry: ModelRegistry) -> None:
    with pytest.raises(NotFound) as info:
        registry.resolve("nope", None)
    error = info.value
    assert error.status == 404
    available = ["digits-cnn", "digits-lstm", "mnist-cnn", "mnist-lstm", "text-topics"]
    assert error.detail == {"model": "nope", "available": available}
    assert error.body()["detail"]["available"] == available


@pytest.mark.parametrize("version", [2, 0, -1])
def test_unknown_version_is_404_listing_the_available(
    version: int, registry: ModelRegistry
) -> None:
    with pytest.raises(NotFound) as info:
        registry.resolve("digits-lstm", version)
    assert info.value.status == 404
    assert info.value.detail == {"model": "digits-lstm", "version": version, "available": [1]}


def test_default_is_the_highest_version(repo_with_v2: Path) -> None:
    registry = load_registry(settings_for(repo_with_v2))
    assert [m.key for m in registry] == [
        "digits-cnn:1",
        "digits-cnn:2",
        "digits-lstm:1",
        "mnist-cnn:1",
        "mnist-lstm:1",
        "text-topics:1",
    ]
    assert registry.resolve(None, None).key == "mnist-cnn:1"
    assert registry.resolve("digits-cnn", None).key == "digits-cnn:2"
    assert registry.resolve("digits-cnn", 1).key == "digits-cnn:1"
    assert registry.latest_version("digits-cnn") == 2
    with pytest.raises(NotFound) as info:
        registry.resolve("digits-cnn", 3)
    assert info.value.detail["available"] == [1, 2]


def test_configured_default_model() -> None:
    registry = load_registry(settings_for(EXPORTS, default_model="digits-lstm"))
    assert registry.resolve(None, None).key == "digits-lstm:1"


def test_default_model_that_is_not_loaded_is_a_startup_error() -> None:
    settings = settings_for(EXPORTS, models=["digits-cnn"], default_model="digits-lstm")
    with pytest.raises(StartupError, match="default model 'digits-lstm' is not loaded"):
        load_registry(settings)


def test_an_empty_registry_is_a_startup_error() -> None:
    with pytest.raises(StartupError, match="no models"):
        ModelRegistry([])


# ---------------------------------------------------------------------------------------------
# Broken model versions refuse to start


def test_corrupt_model_file_fails_the_sha256_check(repo: Path) -> None:
    onnx = repo / "digits-cnn" / "1" / "model.onnx"
    data = bytearray(onnx.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 16):
        data[i] ^= 0xFF
    onnx.write_bytes(bytes(data))
    with pytest.raises(StartupError, match="sha256"):
        load_model(settings_for(repo), "digits-cnn", 1)
    with pytest.raises(StartupError, match="sha256"):
        load_registry(settings_for(repo))
    # The untouched model still loads.
    assert load_model(settings_for(repo), "digits-lstm", 1).key == "digits-lstm:1"


def test_garbage_model_with_matching_sha256_fails_in_onnxruntime(repo: Path) -> None:
    version = repo / "digits-cnn" / "1"
    (version / "model.onnx").write_bytes(b"this is not an ONNX graph\n" * 100)
    digest = sha256_file(version / "model.onnx")
    edit_manifest(version / "model.json", lambda m: m.update(sha256=digest))
    with pytest.raises(StartupError, match="onnxruntime cannot load it") as info:
        load_model(settings_for(repo), "digits-cnn", 1)
    assert str(version / "model.onnx") in str(info.value)


def test_manifest_input_name_must_match_the_graph(repo: Path) -> None:
    version = repo / "digits-cnn" / "1"
    sha_before = sha256_file(version / "model.onnx")

    def rename_input(m: dict[str, Any]) -> None:
        m["input"]["name"] = "pixels"

    edit_manifest(version / "model.json", rename_input)
    assert json.loads((version / "model.json").read_text())["sha256"] == sha_before
    with pytest.raises(StartupError, match="'pixels'") as info:
        load_model(settings_for(repo), "digits-cnn", 1)
    assert "['input']" in str(info.value)  # names what the graph has


def test_manifest_output_name_must_match_the_graph(repo: Path) -> None:
    version = repo / "digits-lstm" / "1"
    edit_manifest(version / "model.json", lambda m: m.update(output_name="scores"))
    with pytest.raises(StartupError, match="'scores'"):
        load_model(settings_for(repo), "digits-lstm", 1)


def test_manifest_input_shape_must_match_the_graph(repo: Path) -> None:
    version = repo / "digits-cnn" / "1"

    def resize(m: dict[str, Any]) -> None:
        m["preprocessing"]["size"] = [16, 16]
        m["input"]["shape"] = [-1, 1, 16, 16]

    edit_manifest(version / "model.json", resize)
    with pytest.raises(StartupError, match=r"graph input shape \[-1, 1, 8, 8\] differs"):
        load_model(settings_for(repo), "digits-cnn", 1)


def test_manifest_in_the_wrong_folder_is_a_startup_error(repo: Path) -> None:
    shutil.copytree(repo / "digits-cnn" / "1", repo / "digits-cnn" / "3")  # still says 1
    with pytest.raises(StartupError, match="version 1"):
        load_registry(settings_for(repo))


def test_missing_model_file_is_a_startup_error(repo: Path) -> None:
    (repo / "digits-lstm" / "1" / "model.onnx").unlink()
    with pytest.raises(StartupError, match=r"no model\.onnx"):
        load_registry(settings_for(repo))


# ---------------------------------------------------------------------------------------------
# Providers


def test_cpu_device_uses_the_cpu_provider() -> None:
    assert choose_providers("cpu") == ["CPUExecutionProvider"]


def test_auto_device_uses_cuda_only_when_available() -> None:
    cuda = (CUDA, {"use_tf32": "0", "cudnn_conv_algo_search": "HEURISTIC"})
    expected = [cuda, CPU] if CUDA in ort.get_available_providers() else [CPU]
    assert choose_providers("auto") == expected


@pytest.mark.skipif(
    CUDA in ort.get_available_providers(), reason="this onnxruntime has the CUDA provider"
)
def test_cuda_device_without_cuda_names_onnxruntime_gpu() -> None:
    with pytest.raises(StartupError, match="onnxruntime-gpu"):
        choose_providers("cuda")


@pytest.mark.skipif(
    CUDA in ort.get_available_providers(), reason="this onnxruntime has the CUDA provider"
)
def test_cuda_device_without_cuda_fails_loading() -> None:
    settings = ServiceSettings(model_repo=EXPORTS, device="cuda", workers=1)
    with pytest.raises(StartupError, match="DIGITSERVE_DEVICE=cuda"):
        load_registry(settings)


# ---------------------------------------------------------------------------------------------
# Running a loaded model


@pytest.mark.parametrize("name", BUNDLED)
def test_run_on_a_batch_of_real_digits(name: str, registry: ModelRegistry) -> None:
    model: LoadedModel = registry.resolve(name, 1)
    data = load_dataset("digits")
    x = pixels_to_input(data.test_images[:3], model.manifest.image_preprocessing)
    assert x.shape == (3, 1, 8, 8)
    logits = model.run(x)
    assert logits.shape == (3, 10)
    assert logits.dtype == np.float32
    assert np.isfinite(logits).all()
    # The bundled models are ~98% accurate; these three digits are among those they get right.
    assert logits.argmax(axis=1).tolist() == data.test_labels[:3].tolist()
    # Batching does not change an image's logits.
    single = model.run(x[1:2])
    assert np.allclose(single[0], logits[1], atol=1e-5)


def test_inference_runs_in_a_thread_on_a_gpu_and_inline_on_the_cpu(
    registry: ModelRegistry,
) -> None:
    from dataclasses import replace

    from service.core.runtime import inference_in_thread

    on_cpu = next(iter(registry))
    on_gpu = replace(on_cpu, provider=CUDA)  # what the loader records when CUDA took it
    unset = settings_for(EXPORTS)
    assert (inference_in_thread(unset, on_cpu), inference_in_thread(unset, on_gpu)) == (
        False,
        True,
    )
    for chosen in (False, True):
        settings = settings_for(EXPORTS, inference_thread=chosen)
        assert inference_in_thread(settings, on_cpu) is chosen
        assert inference_in_thread(settings, on_gpu) is chosen
