"""`python -m training train --arch bilstm-text`: the text counterpart of training.train.

The vocabulary comes from the training split only; train and test texts are encoded with
`modelrepo.text`, the code the service runs, and the resulting TextPreprocessing is saved in
the checkpoint so the export can put it in the manifest unchanged.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from modelrepo.manifest import DEFAULT_TOKEN_PATTERN, TextPreprocessing
from modelrepo.text import build_vocabulary, encode_batch, tokenize
from training.config import ConfigError, TrainConfig
from training.data import TextDataset, load_text_dataset
from training.engine import confusion_matrix, evaluate, fit, seed_everything
from training.train import PARITY_BATCH, build_for_training, run_metrics, save_run

MAX_TEXT_CHARS = 2000  # per text; the service refuses longer request texts
MISCLASSIFIED_SHOWN = 100


def preprocessing_for(
    texts: list[str], max_length: int, vocab_size: int, min_count: int
) -> TextPreprocessing:
    """Lower-cased word tokens with a vocabulary built from the training texts alone."""
    vocabulary = build_vocabulary(
        texts, max_size=vocab_size, min_count=min_count, token_pattern=DEFAULT_TOKEN_PATTERN
    )
    return TextPreprocessing(
        lowercase=True,
        token_pattern=DEFAULT_TOKEN_PATTERN,
        max_length=max_length,
        vocabulary=vocabulary,
        max_text_chars=MAX_TEXT_CHARS,
    )


def to_tensor(
    texts: tuple[str, ...], pairs: tuple[str, ...] | None, spec: TextPreprocessing
) -> torch.Tensor:
    """The eval transform: exactly the encoding the manifest describes, (N, max_length) int64."""
    return torch.from_numpy(encode_batch(texts, spec, pairs))


def _subset(
    dataset: TextDataset, keep: NDArray[np.int64]
) -> tuple[tuple[str, ...], tuple[str, ...] | None, NDArray[np.int64]]:
    texts = tuple(dataset.train_texts[i] for i in keep)
    pairs = None if dataset.train_pairs is None else tuple(dataset.train_pairs[i] for i in keep)
    return texts, pairs, dataset.train_labels[keep]


def run_text_training(config: TrainConfig, *, force: bool = False) -> dict[str, Any]:
    """Train a text model per `config`, write everything to its output folder, return metrics."""
    if config.augment:
        raise ConfigError(f"augmentation applies to images only; {config.arch} reads text")
    out_dir = config.out_dir
    if (out_dir / "checkpoint.pt").exists() and not force:
        raise ConfigError(f"{out_dir} already holds a checkpoint; choose another --out or --force")
    data_dir = Path(config.data_dir).expanduser() if config.data_dir else None
    dataset = load_text_dataset(config.dataset, data_dir)

    generator = seed_everything(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    n_train = len(dataset.train_texts)
    keep = np.arange(n_train)
    if config.limit is not None and config.limit < n_train:
        keep = np.sort(np.random.default_rng(config.seed).permutation(n_train)[: config.limit])
    train_texts, train_pairs, train_labels = _subset(dataset, keep)

    try:
        spec = preprocessing_for(
            [*train_texts, *(train_pairs or ())],
            config.max_length,
            config.vocab_size,
            config.min_count,
        )
    except ValueError as exc:
        raise ConfigError(f"cannot build a vocabulary from {dataset.name}: {exc}") from None
    x_train, y_train = to_tensor(train_texts, train_pairs, spec), torch.from_numpy(train_labels)
    x_test = to_tensor(dataset.test_texts, dataset.test_pairs, spec)
    y_test = torch.from_numpy(dataset.test_labels)
    cut = _truncated_fraction(train_texts, train_pairs, spec)

    model_kwargs: dict[str, Any] = {
        "vocab_size": len(spec.vocabulary),
        "num_classes": dataset.num_classes,
        **config.model_args,
    }
    model, optimizer, n_params = build_for_training(config, **model_kwargs)
    print(
        f"{config.arch} ({n_params:,} parameters) on {dataset.name} ({dataset.task}): "
        f"{len(x_train)} train / {len(x_test)} test rows, vocabulary {len(spec.vocabulary)}, "
        f"max_length {spec.max_length} ({cut:.1%} of training rows cut)"
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
        unit="text",
    )

    final = evaluate(model, x_test, y_test)
    matrix = confusion_matrix(dataset.test_labels, final.predictions, dataset.num_classes)
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
        task=dataset.task,
        vocabulary_size=len(spec.vocabulary),
        max_length=spec.max_length,
        train_truncated_fraction=cut,
    )
    save_run(
        config,
        model,
        model_kwargs,
        metrics,
        spec,
        (dataset.name, dataset.source),
        task=dataset.task,
        # Encoded held-out rows: the export checks torch against onnxruntime on these.
        parity_tokens=x_test[:PARITY_BATCH].clone(),
    )
    _write_misclassified(dataset, final.predictions, out_dir / "misclassified.txt")
    print(f"test accuracy {final.accuracy:.4f}; wrote {out_dir}/checkpoint.pt, metrics and reports")
    return metrics


def _truncated_fraction(
    texts: tuple[str, ...], pairs: tuple[str, ...] | None, spec: TextPreprocessing
) -> float:
    """Share of rows with more tokens than max_length holds: a hint to raise --max-length."""
    room = spec.max_length - (pairs is not None)  # a pair spends one id on the separator
    lengths = [
        len(tokenize(t, spec)) + (len(tokenize(pairs[i], spec)) if pairs is not None else 0)
        for i, t in enumerate(texts)
    ]
    return float(np.mean([n > room for n in lengths])) if lengths else 0.0


def _write_misclassified(dataset: TextDataset, predictions: NDArray[np.int64], path: Path) -> None:
    """The first wrongly classified test rows, one per line: true, predicted, text(s)."""
    wrong = np.flatnonzero(predictions != dataset.test_labels)
    lines = [f"# {len(wrong)} of {len(predictions)} wrong; true\tpredicted\ttext"]
    for i in wrong[:MISCLASSIFIED_SHOWN]:
        text = dataset.test_texts[i]
        if dataset.test_pairs is not None:
            text = f"{text}\t{dataset.test_pairs[i]}"
        true, predicted = dataset.labels[dataset.test_labels[i]], dataset.labels[predictions[i]]
        lines.append(f"{true}\t{predicted}\t{text}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
