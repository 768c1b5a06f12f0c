"""Image classification: (N, C, H, W) float32 pixels in, preprocessed as the manifest says, with
a dynamic batch axis; parity is proven on a real held-out batch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from numpy.typing import NDArray
from torch import nn
from tqdm import tqdm

from modelrepo.canonical import NoInk
from modelrepo.manifest import DigitCanonicalisation, ExplainOutputs, ImagePreprocessing, InputSpec
from modelrepo.preprocess import image_to_pixels, pixels_to_image, pixels_to_input
from training import reports
from training.augment import check_augmentations
from training.checkpoint import checkpoint_preprocessing
from training.config import ConfigError, TrainConfig
from training.data import TEXT_DATASETS, ImageDataset, load_dataset
from training.explain_outputs import ExplainLayers, ExplainModel, add_filters, explain_for
from training.models.registry import Architecture
from training.onnx_checks import (
    DYNAMIC_BATCH_CHECKS,
    INPUT_NAME,
    PARITY_TOLERANCE,
    ExportError,
    check_explain_outputs,
    check_output,
    check_output_names,
    dims,
    explain_parity,
    load_checked_graph,
    parity,
)
from training.tasks.base import PARITY_BATCH, ExportPlan, Task, TrainingData

# Digit training's default once images are canonical: on mnist-5k's held-out digits, 20 epochs
# of the mnist-cnn gave 0.974 without augmentation, 0.986 with affine, 0.988 with both.
DIGIT_AUGMENT = ("affine", "stroke")
PIXEL_SCALE = 1 / 255


def preprocessing_for(
    dataset: ImageDataset,
    train_pixels: NDArray[np.uint8],
    canonical: DigitCanonicalisation | None = None,
) -> ImagePreprocessing:
    """Scale to [0, 1] and standardise with the training split's per-channel mean and std
    (of the canonical pixels, when `canonical` is given)."""
    scaled = train_pixels.astype(np.float64) * PIXEL_SCALE
    mean = scaled.mean(axis=(0, 1, 2))
    std = scaled.std(axis=(0, 1, 2))
    return ImagePreprocessing(
        color=dataset.color,
        size=dataset.image_size,
        scale=PIXEL_SCALE,
        # Rounded so the manifest stays readable; training and serving both use these values.
        mean=[round(float(m), 4) for m in mean],
        std=[round(float(s), 4) for s in std],
        canonical=canonical,
    )


def digit_canonicalisation(size: tuple[int, int]) -> DigitCanonicalisation:
    """MNIST's proportions (a 20 px box on a 28 px canvas) for a canvas of `size`."""
    return DigitCanonicalisation(box=max(1, round(min(size) * 20 / 28)))


def canonical_pixels(
    pixels: NDArray[np.uint8], dataset: ImageDataset, canonical: DigitCanonicalisation
) -> NDArray[np.uint8]:
    """Each image through the service's own path (modelrepo.preprocess.image_to_pixels), so
    the model learns exactly what it will be served."""
    spec = ImagePreprocessing(
        color=dataset.color,
        size=dataset.image_size,
        scale=PIXEL_SCALE,
        mean=[0.0] * dataset.channels,  # not used to make pixels
        std=[1.0] * dataset.channels,
        canonical=canonical,
    )
    out = np.empty_like(pixels)
    for i, image in enumerate(tqdm(pixels, desc="canonicalise", unit="img", leave=False)):
        try:
            out[i] = image_to_pixels(pixels_to_image(image), spec)
        except NoInk as exc:
            raise ConfigError(f"{dataset.name} image {i} has no ink: {exc}") from None
    return out


def to_tensor(pixels: NDArray[np.uint8], spec: ImagePreprocessing) -> torch.Tensor:
    """The eval transform: exactly the preprocessing the manifest describes."""
    return torch.from_numpy(pixels_to_input(pixels, spec))


def first_layer_weights(model: torch.nn.Module) -> tuple[NDArray[np.float32], str]:
    """The first conv layer's filters, or the first LSTM's input weights, for the filters PNG."""
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Conv2d):
            return module.weight.detach().numpy(), f"first conv layer ({name}) filters"
        if isinstance(module, torch.nn.LSTM):
            weights: torch.Tensor = module.all_weights[0][0]  # weight_ih_l0: (4*hidden, input)
            return weights.detach().numpy(), f"LSTM ({name}) input weights"
    raise ValueError(f"{type(model).__name__} has neither a Conv2d nor an LSTM layer")


def check_graph(
    path: Path,
    chw: tuple[int, int, int],
    num_classes: int,
    explain: ExplainOutputs | None = None,
) -> None:
    """Full ONNX check, plus the shapes we rely on: a symbolic batch axis in and out, and the
    outputs: the logits, then exactly the `explain` outputs with their shapes.

    NOTE: torch's dynamo exporter has been seen to fix an LSTM's batch axis to the example's
    size after the first LSTM export in a process, silently; this catches it.
    """
    graph = load_checked_graph(path)
    in_dims = dims(graph.input[0])
    if not isinstance(in_dims[0], str) or in_dims[1:] != list(chw):
        raise ExportError(f"input shape is {in_dims}, expected [batch, {', '.join(map(str, chw))}]")
    check_output_names(graph, explain)
    check_output(graph, num_classes)
    if explain is not None:
        check_explain_outputs(graph, explain)


def _dynamic_batches(x: np.ndarray) -> list[np.ndarray]:
    """The parity batch repeated or cut to each of DYNAMIC_BATCH_CHECKS' sizes (real images)."""
    return [np.resize(x, (n, *x.shape[1:])) for n in DYNAMIC_BATCH_CHECKS]


def _check_dynamic_batch(
    model: torch.nn.Module, path: Path, x: np.ndarray, session: ort.InferenceSession
) -> None:
    for batch in _dynamic_batches(x):
        diff, same = parity(model, path, batch, session)
        if diff > PARITY_TOLERANCE or not same:
            raise ExportError(
                f"at batch size {len(batch)} the export differs from torch (max diff {diff})"
            )


def prove_explain_parity(
    model: torch.nn.Module,
    session: ort.InferenceSession,
    x: np.ndarray,
    explain: ExplainOutputs,
) -> float:
    """The explain outputs equal torch's on the parity batch and at each dynamic batch size:
    activations within PARITY_TOLERANCE, filters exactly; returns the activations' max diff."""
    # The logits' tolerance holds for every block: measured at most 1.7e-5 (mnist-cnn's second
    # block at 28x28, values up to 16), 4.8e-6 over cifar-vgg's six blocks (BatchNorm fused).
    wrapped = ExplainModel(model, ExplainLayers.of(explain))
    worst = 0.0
    for batch in (x, *_dynamic_batches(x)):
        diffs = explain_parity(wrapped, session, batch, explain)
        if explain.filters is not None and diffs.pop(explain.filters.name) != 0.0:
            raise ExportError(f"the graph's {explain.filters.name} differ from the conv's weight")
        name, diff = max(diffs.items(), key=lambda item: item[1], default=("", 0.0))
        if diff > PARITY_TOLERANCE:
            raise ExportError(
                f"at batch size {len(batch)} the graph's {name} differs from torch's by {diff:.3g} "
                f"(tolerance {PARITY_TOLERANCE})"
            )
        worst = max(worst, diff)
    return worst


def _augment(config: TrainConfig, arch: Architecture) -> tuple[str, ...]:
    """The config's augmentation, else DIGIT_AUGMENT for canonical digits, else the arch's."""
    augment = tuple(config.augment) if config.augment is not None else arch.augment
    if config.augment is None and config.canonicalise:
        augment = DIGIT_AUGMENT
    return augment


@dataclass(frozen=True, kw_only=True)
class ImageData(TrainingData):
    test_pixels: NDArray[np.uint8]  # what the model is tested on: canonical when canonicalised


class ImageTask(Task[ImageDataset, ImageData]):
    modality = "image"
    reports = "metrics.json, PNGs"
    exporter = "torch.onnx.export (dynamo)"
    dynamic_axes = ("batch",)

    def check_config(self, config: TrainConfig, arch: Architecture) -> None:
        if config.dataset in TEXT_DATASETS or config.dataset.endswith(".csv"):
            raise ConfigError(
                f"{config.arch} reads images but {config.dataset} is text; "
                "train a text architecture (bilstm-text) on it"
            )
        try:
            check_augmentations(_augment(config, arch))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    def load(self, config: TrainConfig, data_dir: Path | None) -> ImageDataset:
        return load_dataset(config.dataset, data_dir, download=config.download)

    def prepare(self, config: TrainConfig, arch: Architecture, dataset: ImageDataset) -> ImageData:
        train_pixels, train_labels = dataset.train_images, dataset.train_labels
        if config.limit is not None and config.limit < len(train_pixels):
            keep = np.random.default_rng(config.seed).permutation(len(train_pixels))[: config.limit]
            train_pixels, train_labels = train_pixels[keep], train_labels[keep]

        test_pixels = dataset.test_images
        canonical = digit_canonicalisation(dataset.image_size) if config.canonicalise else None
        if canonical is not None:
            train_pixels = canonical_pixels(train_pixels, dataset, canonical)
            test_pixels = canonical_pixels(test_pixels, dataset, canonical)
        spec = preprocessing_for(dataset, train_pixels, canonical)
        x_train, y_train = to_tensor(train_pixels, spec), torch.from_numpy(train_labels)
        x_test, y_test = to_tensor(test_pixels, spec), torch.from_numpy(dataset.test_labels)
        black = np.zeros((1, *dataset.image_size, dataset.channels), dtype=np.uint8)
        pad_value = to_tensor(black, spec)[0, :, 0, 0]  # (C,) a black pixel after preprocessing

        model_kwargs: dict[str, Any] = {
            "in_channels": dataset.channels,
            "image_size": list(dataset.image_size),
            "num_classes": len(dataset.labels),
            **config.model_args,
        }
        augment = _augment(config, arch)
        height, width = dataset.image_size
        return ImageData(
            name=dataset.name,
            source=dataset.source,
            labels=dataset.labels,
            train=(x_train, y_train),
            test=(x_test, y_test),
            preprocessing=spec,
            model_kwargs=model_kwargs,
            build_kwargs={**model_kwargs, "image_size": dataset.image_size},
            summary=(
                f"{dataset.name}: {len(x_train)} train / {len(x_test)} test images of "
                f"{height}x{width}x{dataset.channels}, augment={list(augment) or 'none'}, "
                f"canonical={'digits' if canonical else 'none'}"
            ),
            metrics={
                "augment": list(augment),
                "canonical": "digits" if canonical else "none",
                "split": dataset.source,
            },
            # What the model sees: canonical pixels when canonicalised (pixels_to_input of these
            # is the input the ONNX graph must match the checkpoint on).
            checkpoint={"parity_images": torch.from_numpy(test_pixels[:PARITY_BATCH].copy())},
            augment=augment,
            pad_value=pad_value,
            test_pixels=test_pixels,
        )

    def write_reports(
        self, model: nn.Module, data: ImageData, predictions: NDArray[np.int64], out_dir: Path
    ) -> None:
        test_labels = data.test[1].numpy()
        wrong = np.flatnonzero(predictions != test_labels)
        reports.plot_misclassified(
            data.test_pixels[wrong],
            test_labels[wrong],
            predictions[wrong],
            data.labels,
            out_dir / "misclassified.png",
        )
        first_weights, title = first_layer_weights(model)
        reports.plot_filters(first_weights, out_dir / "filters.png", title=title)

    def export_plan(self, ckpt: dict[str, Any], model: nn.Module) -> ExportPlan:
        spec = checkpoint_preprocessing(ckpt)
        inputs = pixels_to_input(ckpt["parity_images"].numpy(), spec)  # a real held-out batch
        try:
            explain = explain_for(model, torch.from_numpy(inputs))
        except ValueError as exc:  # a module that cannot give one activation map per image
            raise ExportError(f"cannot export the explain outputs: {exc}") from None
        return ExportPlan(
            preprocessing=spec,
            inputs=inputs,
            input=InputSpec(name=INPUT_NAME, shape=[-1, spec.channels, spec.size[0], spec.size[1]]),
            manifest_task="image-classification",
            explain=explain,
        )

    def export_module(self, model: nn.Module, plan: ExportPlan) -> nn.Module:
        if plan.explain is None:
            return model
        return ExplainModel(model, ExplainLayers.of(plan.explain))

    def finish_graph(self, path: Path, model: nn.Module, plan: ExportPlan) -> None:
        if plan.explain is None or plan.explain.filters is None:
            return
        graph_model = onnx.load(str(path))
        weight = ExplainModel(model, ExplainLayers.of(plan.explain)).filters()
        add_filters(graph_model.graph, plan.explain, weight)
        onnx.save(graph_model, str(path))

    def verify_graph(self, path: Path, plan: ExportPlan, num_classes: int) -> None:
        channels, height, width = plan.input.shape[1:]
        check_graph(path, (channels, height, width), num_classes, plan.explain)

    def prove_parity(self, model: nn.Module, path: Path, plan: ExportPlan) -> float:
        """The logits (asked for alone, as /predict does) and then every explain output."""
        x = plan.inputs
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        diff, argmax_equal = parity(model, path, x, session)
        if diff > PARITY_TOLERANCE or not argmax_equal:
            raise ExportError(
                f"parity check failed on {len(x)} held-out images: max abs diff {diff:.3g} "
                f"(tolerance {PARITY_TOLERANCE}), argmax equal: {argmax_equal}"
            )
        _check_dynamic_batch(model, path, x, session)
        if plan.explain is not None:
            prove_explain_parity(model, session, x, plan.explain)
        return diff

    def describe_parity(self, plan: ExportPlan, diff: float) -> str:
        line = f"parity max abs diff {diff:.2e} on {len(plan.inputs)} held-out images, argmax equal"
        if plan.explain is not None:
            line += f"; explain outputs {', '.join(plan.output_names[1:])} proven too"
        return line
