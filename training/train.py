"""`python -m training train`: load data, train, evaluate, write checkpoint, metrics and reports."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn
from tqdm import tqdm

from modelrepo.canonical import NoInk
from modelrepo.manifest import DigitCanonicalisation, ImagePreprocessing, TextPreprocessing
from modelrepo.preprocess import image_to_pixels, pixels_to_image, pixels_to_input
from training import reports
from training.augment import check_augmentations
from training.checkpoint import save_checkpoint
from training.config import ConfigError, TrainConfig
from training.data import TEXT_DATASETS, ImageDataset, load_dataset
from training.engine import Evaluation, confusion_matrix, evaluate, fit, seed_everything
from training.models import build_model, get_architecture

# Digit training's default once images are canonical: on mnist-5k's held-out digits, 20 epochs
# of the mnist-cnn gave 0.974 without augmentation, 0.986 with affine, 0.988 with both.
DIGIT_AUGMENT = ("affine", "stroke")
PARITY_BATCH = 32  # held-out test images stored in the checkpoint for the export parity check
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


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def build_for_training(
    config: TrainConfig, **model_kwargs: Any
) -> tuple[nn.Module, torch.optim.Optimizer, int]:
    """The architecture built from `model_kwargs`, its Adam optimizer and its parameter count;
    ConfigError when the config's model_args do not fit the architecture."""
    try:
        model = build_model(config.arch, **model_kwargs)
    except TypeError as exc:
        raise ConfigError(f"model_args do not fit {config.arch}: {exc}") from None
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return model, optimizer, sum(p.numel() for p in model.parameters())


def run_metrics(
    config: TrainConfig,
    *,
    dataset: str,
    samples: tuple[int, int],
    parameters: int,
    started: float,
    history: list[dict[str, float]],
    final: Evaluation,
    matrix: NDArray[np.int64],
    labels: Sequence[str],
    **extra: Any,
) -> dict[str, Any]:
    """metrics.json for one run: what every run records, then the modality's `extra`."""
    return {
        "arch": config.arch,
        "dataset": dataset,
        "train_samples": samples[0],
        "test_samples": samples[1],
        "epochs": config.epochs,
        "seed": config.seed,
        "parameters": parameters,
        **extra,
        "seconds": round(time.monotonic() - started, 2),
        "history": history,
        "final_test_loss": final.loss,
        "final_test_accuracy": final.accuracy,
        "confusion_matrix": matrix.tolist(),
        "labels": list(labels),
    }


def save_run(
    config: TrainConfig,
    model: nn.Module,
    model_kwargs: dict[str, Any],
    metrics: dict[str, Any],
    preprocessing: ImagePreprocessing | TextPreprocessing,
    source: tuple[str, str],
    **checkpoint_extra: Any,
) -> None:
    """config.json, metrics.json, checkpoint.pt (what every checkpoint holds, then the
    modality's `checkpoint_extra`) and the learning-curve and confusion-matrix PNGs."""
    out_dir = config.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "config.json", config.to_dict())
    write_json(out_dir / "metrics.json", metrics)
    save_checkpoint(
        out_dir / "checkpoint.pt",
        {
            "arch": config.arch,
            "model_kwargs": model_kwargs,
            "state_dict": model.state_dict(),
            "config": config.to_dict(),
            "metrics": {k: v for k, v in metrics.items() if k != "confusion_matrix"},
            "labels": metrics["labels"],
            "preprocessing": preprocessing.model_dump(mode="json"),
            "dataset": {"name": source[0], "source": source[1]},
            **checkpoint_extra,
            "created": datetime.now(UTC).isoformat(),
            "torch_version": str(torch.__version__),
        },
    )
    reports.plot_curves(metrics["history"], out_dir / "curves.png")
    reports.plot_confusion_matrix(
        np.asarray(metrics["confusion_matrix"]), metrics["labels"], out_dir / "confusion_matrix.png"
    )


def run_training(config: TrainConfig, *, force: bool = False) -> dict[str, Any]:
    """Train per `config`, write everything to its output folder and return the metrics."""
    try:
        arch = get_architecture(config.arch)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if arch.modality == "text":
        from training.train_text import run_text_training

        return run_text_training(config, force=force)
    if config.dataset in TEXT_DATASETS or config.dataset.endswith(".csv"):
        raise ConfigError(
            f"{config.arch} reads images but {config.dataset} is text; "
            "train a text architecture (bilstm-text) on it"
        )
    augment = tuple(config.augment) if config.augment is not None else arch.augment
    if config.augment is None and config.canonicalise:
        augment = DIGIT_AUGMENT
    try:
        check_augmentations(augment)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    out_dir = config.out_dir
    if (out_dir / "checkpoint.pt").exists() and not force:
        raise ConfigError(f"{out_dir} already holds a checkpoint; choose another --out or --force")
    data_dir = Path(config.data_dir).expanduser() if config.data_dir else None
    dataset = load_dataset(config.dataset, data_dir, download=config.download)

    generator = seed_everything(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
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
    model, optimizer, n_params = build_for_training(
        config, **{**model_kwargs, "image_size": dataset.image_size}
    )
    print(
        f"{config.arch} ({n_params:,} parameters) on {dataset.name}: {len(x_train)} train / "
        f"{len(x_test)} test images of {dataset.image_size[0]}x{dataset.image_size[1]}x"
        f"{dataset.channels}, augment={list(augment) or 'none'}, "
        f"canonical={'digits' if canonical else 'none'}"
    )

    started = time.monotonic()
    history = fit(
        model,
        optimizer,
        (x_train, y_train),
        (x_test, y_test),
        epochs=config.epochs,
        batch_size=config.batch_size,
        generator=generator,
        augment=augment,
        pad_value=pad_value,
    )

    final = evaluate(model, x_test, y_test)
    matrix = confusion_matrix(dataset.test_labels, final.predictions, len(dataset.labels))
    metrics = run_metrics(
        config,
        dataset=dataset.name,
        samples=(len(x_train), len(x_test)),
        parameters=n_params,
        started=started,
        history=history,
        final=final,
        matrix=matrix,
        labels=dataset.labels,
        augment=list(augment),
        canonical="digits" if canonical else "none",
        split=dataset.source,
    )
    save_run(
        config,
        model,
        model_kwargs,
        metrics,
        spec,
        (dataset.name, dataset.source),
        # What the model sees: canonical pixels when canonicalised (pixels_to_input of these is
        # the input the ONNX graph must match the checkpoint on).
        parity_images=torch.from_numpy(test_pixels[:PARITY_BATCH].copy()),
    )
    wrong = np.flatnonzero(final.predictions != dataset.test_labels)
    reports.plot_misclassified(
        test_pixels[wrong],
        dataset.test_labels[wrong],
        final.predictions[wrong],
        dataset.labels,
        out_dir / "misclassified.png",
    )
    first_weights, title = first_layer_weights(model)
    reports.plot_filters(first_weights, out_dir / "filters.png", title=title)
    print(f"test accuracy {final.accuracy:.4f}; wrote {out_dir}/checkpoint.pt, metrics.json, PNGs")
    return metrics


def first_layer_weights(model: torch.nn.Module) -> tuple[NDArray[np.float32], str]:
    """The first conv layer's filters, or the first LSTM's input weights, for the filters PNG."""
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Conv2d):
            return module.weight.detach().numpy(), f"first conv layer ({name}) filters"
        if isinstance(module, torch.nn.LSTM):
            weights: torch.Tensor = module.all_weights[0][0]  # weight_ih_l0: (4*hidden, input)
            return weights.detach().numpy(), f"LSTM ({name}) input weights"
    raise ValueError(f"{type(model).__name__} has neither a Conv2d nor an LSTM layer")
