"""Every service setting in one place: environment variables with the DIGITSERVE_ prefix."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "DIGITSERVE_"


class ServiceSettings(BaseSettings):
    """Resolved from DIGITSERVE_<FIELD> environment variables (e.g. DIGITSERVE_MODEL_REPO)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    model_repo: Path = Field(Path("exports"), description="the model repository folder")
    models: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="what to load: 'name' (its versions per `versions`) or 'name:version'; "
        "empty loads every model in the repository",
    )
    versions: Literal["all", "latest"] = Field("all", description="versions of a named model")
    default_model: str | None = Field(
        None,
        description="model used when a request names none (default: mnist-cnn when it is "
        "loaded, else the first model)",
    )
    workers: int = Field(default_factory=lambda: min(os.cpu_count() or 1, 64), ge=1, le=64)
    ort_threads: int = Field(1, ge=1, le=64, description="onnxruntime intra-op threads per worker")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="auto: CUDA when onnxruntime-gpu sees a GPU, else CPU; "
        "cuda: fail start-up unless CUDA is available",
    )
    max_batch_size: int = Field(32, ge=1, le=4096, description="images per onnxruntime call")
    max_latency_ms: int = Field(
        500,
        ge=1,
        description="latency budget per request, from arrival: a request that cannot be "
        "answered within it is refused with 503 + Retry-After at once",
    )
    max_queue: int = Field(
        256,
        ge=1,
        description="requests admitted per model and worker at once (decoding, queued or "
        "running); more are refused with 503 + Retry-After",
    )
    max_batch_wait_ms: float = Field(
        2.0, ge=0, description="longest the dispatcher may hold a request to grow its batch"
    )
    max_upload_bytes: int = Field(10 * 1024 * 1024, ge=1024, description="per request body")
    max_image_pixels: int = Field(
        25_000_000, ge=1, description="width x height limit, checked before decoding"
    )
    max_batch_images: int = Field(64, ge=1, description="images per /predict/batch request")
    explain_concurrency: int = Field(
        2,
        ge=1,
        le=64,
        description="/explain requests one worker runs at once (each costs tens of "
        "inferences); more are refused with 503 + Retry-After",
    )
    request_timeout_s: float = Field(60.0, gt=0, description="BentoML's per-request timeout")
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="a connection must send a request's complete headers within this many "
        "seconds of connecting or of its previous answer, or it is closed (slowloris)",
    )
    body_timeout_s: float = Field(
        10.0,
        gt=0,
        description="longest wait for the next bytes of a prediction request's body; past it "
        "408 and the connection is closed. The whole body must also arrive within 80%% of "
        "request_timeout_s. A request's latency budget starts once its body has arrived",
    )
    access_log: bool = Field(False, description="BentoML's per-request access log line")
    tracing: bool = Field(
        False, description="BentoML's OpenTelemetry span per request (configure an exporter "
        "through BentoML to use them); off skips their cost"
    )  # fmt: skip
    inference_thread: bool | None = Field(
        None, description="run onnxruntime in a thread beside the event loop; unset (default): "
        "in a thread for models on a GPU, inline on the CPU, where it costs less for small models"
    )  # fmt: skip
    api_key: SecretStr | None = Field(
        None, description="when set, predict endpoints need it (Authorization: Bearer or X-API-Key)"
    )
    admin_api_key: SecretStr | None = Field(
        None, description="key for the /admin endpoints; unset disables them (403)"
    )
    max_header_bytes: int = Field(
        16 * 1024, ge=1024, description="request headers, all together; more is answered 431"
    )
    drain_s: float = Field(
        3.0,
        ge=0,
        description="after SIGTERM: seconds of answering requests while /readyz says 503, "
        "so load balancers stop sending, before in-flight requests are finished and it exits",
    )
    shutdown_timeout_s: int = Field(
        20, ge=1, description="after draining: longest wait for in-flight requests to finish"
    )
    runtime_dir: Path | None = Field(
        None,
        description="folder the workers share (liveness, draining, reloads); "
        "python -m service creates one",
    )
    reload_poll_s: float = Field(
        0.0,
        ge=0,
        description="watch the model repository every this many seconds and load new "
        "versions; 0 (default) reloads only on POST /admin/reload",
    )
    balance_connections: bool = Field(
        True,
        description="give each worker a listening socket of its own (SO_REUSEPORT) so the "
        "kernel spreads connections across workers instead of one worker taking them all",
    )
    grpc_port: int = Field(
        8001,
        ge=0,
        le=65535,
        description="port of the Open Inference Protocol over gRPC (inference."
        "GRPCInferenceService), served by every worker; 0 turns it off",
    )
    grpc_host: str = Field(
        "127.0.0.1",
        description="address the gRPC listener binds; python -m service sets it to --host",
    )
    warmup_batch_sizes: Annotated[list[int], NoDecode] = Field(default_factory=lambda: [1, 8, 32])

    @field_validator("api_key", "admin_api_key", mode="before")
    @classmethod
    def _empty_key_is_unset(cls, value: object) -> object:
        # DIGITSERVE_API_KEY= (as compose writes an unset ${VAR:-}) must not make the empty
        # string a key that an empty header would match.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("models", "warmup_batch_sizes", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        # From the environment: "a,b" (NoDecode keeps pydantic-settings from expecting JSON).
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("models")
    @classmethod
    def _model_specs(cls, specs: list[str]) -> list[str]:
        for spec in specs:
            name, colon, version = spec.partition(":")
            if not name or (colon and not re.fullmatch(r"[0-9]+", version)):
                raise ValueError(f"{spec!r} is not 'name' or 'name:version'")
        return specs

    @field_validator("warmup_batch_sizes")
    @classmethod
    def _positive_sizes(cls, sizes: list[int]) -> list[int]:
        if any(n < 1 for n in sizes):
            raise ValueError(f"warm-up batch sizes must be at least 1, got {sizes}")
        return sizes

    def to_env(self) -> dict[str, str]:
        """The environment that reproduces these settings in a worker process."""
        env = {}
        for name, value in self.model_dump(mode="json").items():
            if value is None:
                continue
            if name in ("api_key", "admin_api_key"):
                value = getattr(self, name).get_secret_value()
            if isinstance(value, list):
                value = ",".join(str(v) for v in value)
            env[f"{ENV_PREFIX}{name.upper()}"] = (
                str(value).lower() if isinstance(value, bool) else str(value)
            )
        return env
