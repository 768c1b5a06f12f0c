"""ServiceSettings from DIGITSERVE_ environment variables: defaults, overrides, validation, and
the to_env() round trip that hands the settings to worker processes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import ENV_PREFIX, ServiceSettings

CPUS = 4


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No DIGITSERVE_ variable of the machine running the tests leaks into them, and the
    default worker count does not depend on its CPUs (see the test for > 64 CPUs)."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    monkeypatch.setattr(os, "cpu_count", lambda: CPUS)


def error_fields(exc: ValidationError) -> set[str]:
    return {".".join(str(part) for part in err["loc"]) for err in exc.errors()}


def test_defaults() -> None:
    s = ServiceSettings()
    assert s.model_repo == Path("exports")
    assert s.models == []
    assert s.versions == "all"
    assert s.default_model is None
    assert s.workers == CPUS  # os.cpu_count()
    assert s.ort_threads == 1
    assert s.device == "auto"
    assert s.max_batch_size == 32
    assert s.max_latency_ms == 500
    assert s.max_upload_bytes == 10 * 1024 * 1024
    assert s.max_image_pixels == 25_000_000
    assert s.max_batch_images == 64
    assert s.request_timeout_s == 60.0
    assert s.access_log is False
    assert s.warmup_batch_sizes == [1, 8, 32]


def test_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGITSERVE_MAX_BATCH_SIZE", "8")
    monkeypatch.setenv("DIGITSERVE_MODELS", "digits-cnn,digits-lstm:1")
    monkeypatch.setenv("DIGITSERVE_WARMUP_BATCH_SIZES", "1,4")
    monkeypatch.setenv("DIGITSERVE_MODEL_REPO", "/srv/models")
    monkeypatch.setenv("DIGITSERVE_VERSIONS", "latest")
    monkeypatch.setenv("DIGITSERVE_DEFAULT_MODEL", "digits-lstm")
    monkeypatch.setenv("DIGITSERVE_DEVICE", "cpu")
    monkeypatch.setenv("DIGITSERVE_ACCESS_LOG", "true")
    monkeypatch.setenv("DIGITSERVE_REQUEST_TIMEOUT_S", "2.5")
    s = ServiceSettings()
    assert s.max_batch_size == 8
    assert s.models == ["digits-cnn", "digits-lstm:1"]
    assert s.warmup_batch_sizes == [1, 4]
    assert s.model_repo == Path("/srv/models")
    assert s.versions == "latest"
    assert s.default_model == "digits-lstm"
    assert s.device == "cpu"
    assert s.access_log is True
    assert s.request_timeout_s == 2.5
    assert s.max_latency_ms == 500  # untouched fields keep their defaults


def test_env_names_are_case_insensitive_and_unprefixed_names_ignored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("digitserve_max_batch_size", "16")
    monkeypatch.setenv("MAX_BATCH_IMAGES", "3")  # no prefix: not ours
    s = ServiceSettings()
    assert s.max_batch_size == 16
    assert s.max_batch_images == 64


def test_comma_separated_values_are_trimmed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGITSERVE_MODELS", " digits-cnn , digits-lstm:1 ,, ")
    monkeypatch.setenv("DIGITSERVE_WARMUP_BATCH_SIZES", " 2 , 16 ")
    s = ServiceSettings()
    assert s.models == ["digits-cnn", "digits-lstm:1"]
    assert s.warmup_batch_sizes == [2, 16]


def test_empty_models_env_means_all_models(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGITSERVE_MODELS", "")
    assert ServiceSettings().models == []


def test_keyword_arguments_take_lists_and_beat_the_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGITSERVE_MAX_BATCH_SIZE", "8")
    s = ServiceSettings(models=["digits-cnn:1"], max_batch_size=4)
    assert s.models == ["digits-cnn:1"]
    assert s.max_batch_size == 4


@pytest.mark.parametrize(
    ("variable", "value", "field"),
    [
        ("MAX_BATCH_SIZE", "0", "max_batch_size"),
        ("MAX_BATCH_SIZE", "4097", "max_batch_size"),
        ("MAX_BATCH_SIZE", "many", "max_batch_size"),
        ("DEVICE", "tpu", "device"),
        ("MODELS", "a:x", "models"),
        ("MODELS", "digits-cnn,:1", "models"),
        ("MODELS", "digits-cnn:1.5", "models"),
        ("VERSIONS", "newest", "versions"),
        ("WORKERS", "0", "workers"),
        ("WORKERS", "65", "workers"),
        ("ORT_THREADS", "0", "ort_threads"),
        ("MAX_UPLOAD_BYTES", "1023", "max_upload_bytes"),
        ("MAX_IMAGE_PIXELS", "0", "max_image_pixels"),
        ("REQUEST_TIMEOUT_S", "0", "request_timeout_s"),
        ("WARMUP_BATCH_SIZES", "1,x", "warmup_batch_sizes.1"),
        ("ACCESS_LOG", "sometimes", "access_log"),
    ],
)
def test_invalid_env_values_are_rejected_naming_the_field(
    variable: str, value: str, field: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_PREFIX + variable, value)
    with pytest.raises(ValidationError) as info:
        ServiceSettings()
    assert error_fields(info.value) == {field}


def test_invalid_model_spec_message_names_the_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGITSERVE_MODELS", "digits-cnn,a:x")
    with pytest.raises(ValidationError, match="'a:x' is not 'name' or 'name:version'"):
        ServiceSettings()


def test_invalid_keyword_values_are_rejected() -> None:
    with pytest.raises(ValidationError) as info:
        ServiceSettings(max_batch_size=0)
    assert error_fields(info.value) == {"max_batch_size"}
    with pytest.raises(ValidationError) as info:
        ServiceSettings(device="tpu")
    assert error_fields(info.value) == {"device"}


def test_settings_are_frozen() -> None:
    s = ServiceSettings()
    with pytest.raises(ValidationError):
        s.max_batch_size = 2  # type: ignore[misc]
    assert s.max_batch_size == 32


def apply_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def test_to_env_round_trip_of_non_default_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    original = ServiceSettings(
        model_repo=Path("/srv/models"),
        models=["digits-cnn", "digits-lstm:1"],
        versions="latest",
        default_model="digits-lstm",
        workers=3,
        ort_threads=2,
        device="cpu",
        max_batch_size=8,
        max_latency_ms=250,
        max_upload_bytes=2048,
        max_image_pixels=1_000_000,
        max_batch_images=5,
        request_timeout_s=12.5,
        access_log=True,
        warmup_batch_sizes=[1, 4],
    )
    assert original != ServiceSettings()
    env = original.to_env()
    assert env["DIGITSERVE_MODELS"] == "digits-cnn,digits-lstm:1"
    assert env["DIGITSERVE_WARMUP_BATCH_SIZES"] == "1,4"
    assert env["DIGITSERVE_ACCESS_LOG"] == "true"
    assert env["DIGITSERVE_MODEL_REPO"] == "/srv/models"
    assert all(name.startswith(ENV_PREFIX) for name in env)
    assert all(isinstance(value, str) for value in env.values())
    apply_env(monkeypatch, env)
    assert ServiceSettings() == original


def test_to_env_round_trip_of_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    original = ServiceSettings()
    env = original.to_env()
    assert "DIGITSERVE_DEFAULT_MODEL" not in env  # None is left out, not "None"
    assert env["DIGITSERVE_MODELS"] == ""
    apply_env(monkeypatch, env)
    assert ServiceSettings() == original


def test_to_env_names_every_field_but_unset_optionals() -> None:
    env = ServiceSettings(default_model="digits-cnn").to_env()
    unset = {"api_key", "admin_api_key", "runtime_dir", "inference_thread"}
    assert set(env) == {
        ENV_PREFIX + n.upper() for n in ServiceSettings.model_fields if n not in unset
    }


def test_to_env_carries_the_keys_themselves_not_their_masks() -> None:
    settings = ServiceSettings(api_key="k1", admin_api_key="k2")
    env = settings.to_env()
    assert (env["DIGITSERVE_API_KEY"], env["DIGITSERVE_ADMIN_API_KEY"]) == ("k1", "k2")
    assert "k1" not in settings.model_dump_json()  # what start-up prints


def test_an_empty_key_is_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGITSERVE_API_KEY", "")
    monkeypatch.setenv("DIGITSERVE_ADMIN_API_KEY", "  ")
    settings = ServiceSettings()
    assert settings.api_key is None and settings.admin_api_key is None


def test_default_workers_follow_the_cpu_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 7)
    assert ServiceSettings().workers == 7
    monkeypatch.setattr(os, "cpu_count", lambda: None)  # unknown: one worker
    assert ServiceSettings().workers == 1


def test_defaults_load_on_a_machine_with_more_than_64_cpus(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 128)
    s = ServiceSettings()  # raises ValidationError: workers 128 > 64
    assert s.workers == 64


def test_non_ascii_digit_versions_are_rejected() -> None:
    # "²".isdigit() is True: only ASCII digits may pass, or int("²") would fail later.
    with pytest.raises(ValidationError) as info:
        ServiceSettings(models=["digits-cnn:²"])
    assert error_fields(info.value) == {"models"}


@pytest.mark.parametrize("sizes", ["0", "-1", "1,-8"])
def test_warmup_batch_sizes_must_be_positive(sizes: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The runtime warms each session with np.zeros((n, ...)): -1 crashes start-up with numpy's
    # "negative dimensions are not allowed" instead of a settings error naming the variable.
    monkeypatch.setenv("DIGITSERVE_WARMUP_BATCH_SIZES", sizes)
    with pytest.raises(ValidationError) as info:
        ServiceSettings()
    assert {f.split(".")[0] for f in error_fields(info.value)} == {"warmup_batch_sizes"}


def test_a_colon_without_a_version_is_rejected() -> None:
    with pytest.raises(ValidationError, match="models"):
        ServiceSettings(models=["digits-cnn:"])
