"""Load model versions from the repository into onnxruntime sessions, checked against their
manifests, and look them up by name and version."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from modelrepo.layout import RepositoryError, list_models, list_versions, open_version
from modelrepo.manifest import Manifest
from service.core.errors import NotFound
from service.core.modalities import input_of
from service.core.modality import Modality
from service.settings import ServiceSettings

log = logging.getLogger("digitserve")

CUDA = "CUDAExecutionProvider"
# TF32 (onnxruntime's default on Ampere and later) rounds matrix inputs to 10-bit mantissas:
# on an H100 the bundled models' outputs then differed from the CPU's by up to 4.3e-3. These
# models are far too small for tensor cores to pay, so full float32 it is.
CUDA_OPTIONS = {"use_tf32": "0", "cudnn_conv_algo_search": "HEURISTIC"}
CPU = "CPUExecutionProvider"


class StartupError(RuntimeError):
    """The service cannot start as configured; the message says why and what to change."""


@dataclass
class LoadedModel:
    """One model version: its manifest, its input's modality and the onnxruntime session that
    runs it."""

    manifest: Manifest
    session: ort.InferenceSession
    provider: str
    path: Path
    input: Modality[Any] = field(init=False)

    def __post_init__(self) -> None:
        self.input = input_of(self.manifest)

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> int:
        return self.manifest.version

    @property
    def key(self) -> str:
        return f"{self.name}:{self.version}"

    def run(self, x: NDArray[np.generic]) -> NDArray[np.float32]:
        """(B, C, H, W) images or (B, T) token ids -> (B, classes) logits; onnxruntime
        releases the GIL while it runs."""
        out: NDArray[np.float32] = self.session.run(
            [self.manifest.output_name], {self.manifest.input.name: x}
        )[0]
        return out

    def outputs(self, names: list[str], x: NDArray[np.generic]) -> list[NDArray[np.float32]]:
        """The named graph outputs for `x` (the manifest's explain outputs: /explain only)."""
        result: list[NDArray[np.float32]] = self.session.run(names, {self.manifest.input.name: x})
        return result


def choose_providers(device: str) -> list[str | tuple[str, dict[str, str]]]:
    available = ort.get_available_providers()
    if device == "cuda" and CUDA not in available:
        raise StartupError(
            "DIGITSERVE_DEVICE=cuda, but this onnxruntime has no CUDA provider "
            f"(available: {', '.join(available)}); install the gpu extra (onnxruntime-gpu) "
            "or set DIGITSERVE_DEVICE=auto"
        )
    if device in ("auto", "cuda") and CUDA in available:
        return [(CUDA, CUDA_OPTIONS), CPU]
    return [CPU]


def open_session(model_path: Path, settings: ServiceSettings) -> tuple[ort.InferenceSession, str]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.ort_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(
        str(model_path), sess_options=options, providers=choose_providers(settings.device)
    )
    provider = session.get_providers()[0]
    if settings.device == "cuda" and provider != CUDA:
        # onnxruntime-gpu falls back to the CPU when no GPU is visible; that must not pass.
        raise StartupError(
            f"DIGITSERVE_DEVICE=cuda, but onnxruntime could not use a GPU for {model_path} "
            f"(it chose {provider}); check the GPU and CUDA/cuDNN libraries are visible"
        )
    return session, provider


def check_session(model: LoadedModel) -> None:
    """The graph must take and give what the manifest says."""
    m = model.manifest
    inputs = {i.name: i for i in model.session.get_inputs()}
    outputs = {o.name: o for o in model.session.get_outputs()}
    if m.input.name not in inputs or m.output_name not in outputs:
        raise StartupError(
            f"{model.path}: the graph's inputs {sorted(inputs)} / outputs {sorted(outputs)} do "
            f"not include the manifest's {m.input.name!r} / {m.output_name!r}"
        )
    explain = m.explain
    extra = [a.name for a in explain.activations] if explain else []
    extra += [explain.filters.name] if explain and explain.filters else []
    missing = [name for name in extra if name not in outputs]
    if missing:
        raise StartupError(
            f"{model.path}: the manifest's explain outputs {missing} are not outputs of the "
            f"graph (it has {sorted(outputs)})"
        )
    graph_shape = [d if isinstance(d, int) else -1 for d in inputs[m.input.name].shape]
    if graph_shape != m.input.shape:
        raise StartupError(
            f"{model.path}: graph input shape {graph_shape} differs from the manifest's "
            f"{m.input.shape}"
        )


def resolve_specs(settings: ServiceSettings) -> list[tuple[str, int]]:
    """(name, version) pairs to load, in order, from the settings and the repository."""
    root = settings.model_repo
    try:
        specs = settings.models or list_models(root)
    except RepositoryError as exc:
        raise StartupError(str(exc)) from None
    if not specs:
        raise StartupError(f"model repository {root} holds no model versions")
    wanted: list[tuple[str, int]] = []
    for spec in specs:
        name, _, pinned = spec.partition(":")
        try:
            versions = list_versions(root, name)
        except RepositoryError as exc:
            raise StartupError(str(exc)) from None
        if not versions:
            raise StartupError(f"model {name!r} has no versions in {root}")
        if pinned:
            if int(pinned) not in versions:
                raise StartupError(f"{name} version {pinned} is not in {root} (has {versions})")
            chosen = [int(pinned)]
        else:
            chosen = versions if settings.versions == "all" else versions[-1:]
        wanted += [(name, v) for v in chosen if (name, v) not in wanted]
    return wanted


def load_model(settings: ServiceSettings, name: str, version: int) -> LoadedModel:
    try:
        entry = open_version(settings.model_repo, name, version)  # checks the sha256
    except RepositoryError as exc:
        raise StartupError(str(exc)) from None
    try:
        session, provider = open_session(entry.model_path, settings)
    except StartupError:
        raise
    except Exception as exc:  # onnxruntime raises its own exception types for bad files
        raise StartupError(f"{entry.model_path}: onnxruntime cannot load it: {exc}") from None
    model = LoadedModel(
        manifest=entry.manifest, session=session, provider=provider, path=entry.path
    )
    check_session(model)
    return model


# The default model when DIGITSERVE_DEFAULT_MODEL names none and this one is loaded: the
# bundled CNN trained on real MNIST digits, which canonicalises what it is sent.
PREFERRED_DEFAULT = "mnist-cnn"


class ModelRegistry:
    """The loaded models, by name and version, with the default model first."""

    def __init__(self, models: list[LoadedModel], default_model: str | None = None) -> None:
        if not models:
            raise StartupError("no models to serve")
        self._by_name: dict[str, dict[int, LoadedModel]] = {}
        for model in models:
            self._by_name.setdefault(model.name, {})[model.version] = model
        if default_model is None:  # the preferred default when it is loaded, else the first
            default_model = PREFERRED_DEFAULT if PREFERRED_DEFAULT in self._by_name else None
        self.default_model = default_model or models[0].name
        if self.default_model not in self._by_name:
            raise StartupError(
                f"default model {self.default_model!r} is not loaded "
                f"(loaded: {', '.join(self._by_name)})"
            )

    def __iter__(self) -> Iterator[LoadedModel]:
        for versions in self._by_name.values():
            yield from (versions[v] for v in sorted(versions))

    def default_for(self, modality: type[Modality[Any]]) -> str:
        """The model a request for this modality gets when it names none: the default model
        if it takes such input, else the first such model loaded; 404 when none is."""
        for name in [self.default_model, *self._by_name]:
            latest = self._by_name[name][max(self._by_name[name])]
            if isinstance(latest.input, modality):
                return name
        raise NotFound(
            f"no {modality.kind} model is loaded",
            detail={"available": sorted(self._by_name)},
        )

    def latest_version(self, name: str) -> int:
        return max(self._by_name[name])

    def resolve(self, name: str | None, version: int | None) -> LoadedModel:
        """The model a request asks for; 404 with what is available otherwise."""
        name = name or self.default_model
        versions = self._by_name.get(name)
        if versions is None:
            raise NotFound(
                f"model {name!r} is not loaded",
                detail={"model": name, "available": sorted(self._by_name)},
            )
        if version is None:
            return versions[max(versions)]
        if version not in versions:
            raise NotFound(
                f"model {name!r} has no version {version}",
                detail={"model": name, "version": version, "available": sorted(versions)},
            )
        return versions[version]


def load_registry(settings: ServiceSettings) -> ModelRegistry:
    models = [load_model(settings, n, v) for n, v in resolve_specs(settings)]
    for m in models:
        log.info(
            "loaded model %s version %d provider=%s sha256=%s from %s",
            m.name,
            m.version,
            m.provider,
            m.manifest.sha256,
            m.path,
        )
    return ModelRegistry(models, settings.default_model)
