"""Text classification (of one text or a pair): (N, T) int64 token ids in, with both the batch
and the sequence axis dynamic, proven on held-out rows at several lengths.

The vocabulary comes from the training split only; train and test texts are encoded with
`modelrepo.text`, the code the service runs, and the resulting TextPreprocessing is saved in
the checkpoint so the export can put it in the manifest unchanged.

NOTE: with torch 2.13 the dynamo exporter's graph optimiser (onnxscript's constant folding)
bakes the example's sequence length into a Reshape after the first LSTM, so the graph claims a
dynamic token axis but fails at any other length. Exporting with `optimize=False` keeps the
shape computation symbolic (onnxruntime still folds constants when it loads the file); the
parity check at several lengths is what proves it. The legacy TorchScript exporter
(dynamo=False) also gives a working graph, but it is deprecated, so it is not used.
"""

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

from modelrepo.manifest import DEFAULT_TOKEN_PATTERN, InputSpec, TextPreprocessing
from modelrepo.text import build_vocabulary, encode_batch, tokenize
from training.checkpoint import CheckpointError, checkpoint_text_preprocessing
from training.config import ConfigError, TrainConfig
from training.data import TextDataset, load_text_dataset
from training.models.registry import Architecture
from training.onnx_checks import (
    DYNAMIC_BATCH_CHECKS,
    INPUT_NAME,
    PARITY_TOLERANCE,
    ExportError,
    check_output,
    dims,
    load_checked_graph,
    parity,
)
from training.tasks.base import PARITY_BATCH, ExportPlan, Task, TrainingData

MAX_TEXT_CHARS = 2000  # per text; the service refuses longer request texts
MISCLASSIFIED_SHOWN = 100
SEQUENCE_CHECKS = (1, 7)  # token counts checked besides max_length


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


def _forget_cached_lstm_kernels() -> None:
    """NOTE: for a dynamic sequence axis torch.onnx swaps a while-loop LSTM decomposition into
    aten.lstm's kernels for the length of one export, but the op's dispatch cache keeps the
    unrolled decomposition (`lstm_impl`) it resolved on the way; the next export in the same
    process then unrolls the loop and silently fixes the token axis to the example's length.
    Clearing that private cache before each export avoids it; check_graph would catch it."""
    for op in (torch.ops.aten.lstm.input, torch.ops.aten.lstm.data):
        cache = getattr(op, "_dispatch_cache", None)
        if isinstance(cache, dict):
            cache.clear()


def check_graph(path: Path, num_classes: int) -> None:
    """Full ONNX check, one self-contained file, an int64 [batch, tokens] input with both axes
    symbolic, and a [batch, num_classes] output."""
    graph = load_checked_graph(path)
    value = graph.input[0]
    in_dims = dims(value)
    if value.type.tensor_type.elem_type != onnx.TensorProto.INT64:
        dtype = onnx.TensorProto.DataType.Name(value.type.tensor_type.elem_type)
        raise ExportError(f"input dtype is {dtype}, expected INT64 token ids")
    if len(in_dims) != 2 or not all(isinstance(d, str) for d in in_dims):
        raise ExportError(f"input shape is {in_dims}, expected [batch, tokens], both dynamic")
    check_output(graph, num_classes)


def parity_grid(
    model: torch.nn.Module, path: Path, x: NDArray[np.int64], lengths: list[int]
) -> float:
    """max |torch - onnxruntime| over the held-out rows `x` cut to each of `lengths` tokens, at
    batch sizes 1, 17 and len(x); raises ExportError on a diff over tolerance or any argmax
    that differs."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for length in lengths:
        rows = np.ascontiguousarray(x[:, :length])
        for n in (*DYNAMIC_BATCH_CHECKS, len(x)):
            batch = np.resize(rows, (n, length))  # repeats held-out rows to reach n
            diff, argmax_equal = parity(model, path, batch, session)
            if diff > PARITY_TOLERANCE or not argmax_equal:
                raise ExportError(
                    f"parity check failed at batch {n} x {length} tokens: max abs diff "
                    f"{diff:.3g} (tolerance {PARITY_TOLERANCE}) or a different argmax"
                )
            worst = max(worst, diff)
    return worst


@dataclass(frozen=True, kw_only=True)
class TextData(TrainingData):
    dataset: TextDataset  # for the misclassified rows' texts


class TextTask(Task[TextDataset, TextData]):
    modality = "text"
    reports = "metrics and reports"
    exporter = "torch.onnx.export (dynamo, optimize=False)"
    dynamic_axes = ("batch", "tokens")
    optimize = False  # see the module docstring

    def check_config(self, config: TrainConfig, arch: Architecture) -> None:
        if config.augment:
            raise ConfigError(f"augmentation applies to images only; {config.arch} reads text")

    def load(self, config: TrainConfig, data_dir: Path | None) -> TextDataset:
        return load_text_dataset(config.dataset, data_dir)

    def prepare(self, config: TrainConfig, arch: Architecture, dataset: TextDataset) -> TextData:
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
        return TextData(
            name=dataset.name,
            source=dataset.source,
            labels=dataset.labels,
            train=(x_train, y_train),
            test=(x_test, y_test),
            preprocessing=spec,
            model_kwargs=model_kwargs,
            build_kwargs=model_kwargs,
            summary=(
                f"{dataset.name} ({dataset.task}): {len(x_train)} train / {len(x_test)} test "
                f"rows, vocabulary {len(spec.vocabulary)}, max_length {spec.max_length} "
                f"({cut:.1%} of training rows cut)"
            ),
            metrics={
                "task": dataset.task,
                "vocabulary_size": len(spec.vocabulary),
                "max_length": spec.max_length,
                "train_truncated_fraction": cut,
            },
            checkpoint={
                "task": dataset.task,
                # Encoded held-out rows: the export checks torch against onnxruntime on these.
                "parity_tokens": x_test[:PARITY_BATCH].clone(),
            },
            unit="text",
            dataset=dataset,
        )

    def write_reports(
        self, model: nn.Module, data: TextData, predictions: NDArray[np.int64], out_dir: Path
    ) -> None:
        _write_misclassified(data.dataset, predictions, out_dir / "misclassified.txt")

    def export_plan(self, ckpt: dict[str, Any], model: nn.Module) -> ExportPlan:
        spec = checkpoint_text_preprocessing(ckpt)
        missing = {"parity_tokens", "task"} - set(ckpt)
        if missing:
            raise CheckpointError(f"the text checkpoint lacks {', '.join(sorted(missing))}")
        x = ckpt["parity_tokens"].numpy().astype(np.int64)  # held-out rows, (N, max_length)
        if x.shape[1] != spec.max_length:
            raise CheckpointError(
                f"parity rows have {x.shape[1]} ids, not max_length {spec.max_length}"
            )
        source = ckpt.get("dataset", {})
        return ExportPlan(
            preprocessing=spec,
            inputs=x,
            input=InputSpec(name=INPUT_NAME, dtype="int64", shape=[-1, -1], layout="NT"),
            manifest_task=ckpt["task"],
            dataset=f"{source['name']}: {source['source']}" if "source" in source else None,
            sequence_lengths=sorted(
                {*(n for n in SEQUENCE_CHECKS if n < spec.max_length), spec.max_length}
            ),
        )

    def before_export(self) -> None:
        _forget_cached_lstm_kernels()

    def verify_graph(self, path: Path, plan: ExportPlan, num_classes: int) -> None:
        check_graph(path, num_classes)

    def prove_parity(self, model: nn.Module, path: Path, plan: ExportPlan) -> float:
        return parity_grid(model, path, plan.inputs, plan.sequence_lengths)

    def describe_parity(self, plan: ExportPlan, diff: float) -> str:
        x = plan.inputs
        return (
            f"parity max abs diff {diff:.2e} on {len(x)} held-out rows at "
            f"{plan.sequence_lengths} tokens and batch sizes {[*DYNAMIC_BATCH_CHECKS, len(x)]}, "
            "argmax equal"
        )
