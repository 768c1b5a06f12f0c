"""Text data sets from CSV files: one text per row (`text,label`), or question pairs in the
Quora format (`question1,question2,is_duplicate`; other columns such as id, qid1, qid2 are
ignored). Imports only numpy and the standard library; never torch.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from training.data.base import DatasetError

TextTask = Literal["text-classification", "text-pair-classification"]

SINGLE_COLUMNS = ("text", "label")
PAIR_COLUMNS = ("question1", "question2", "is_duplicate")
PAIR_LABELS: tuple[str, str] = ("not-duplicate", "duplicate")  # is_duplicate 0 and 1

# As for the image sets, the split belongs to the data set, not to a run: a fixed seed keeps the
# test rows the same whatever seed the trainer uses.
SPLIT_SEED = 0
TEST_FRACTION = 0.2


@dataclass(frozen=True, eq=False)
class TextDataset:
    """Labelled texts (or text pairs) with a fixed train/test split; labels index `labels`."""

    name: str
    task: TextTask
    train_texts: tuple[str, ...]
    train_pairs: tuple[str, ...] | None  # the second text of each pair; None for one text
    train_labels: NDArray[np.int64]
    test_texts: tuple[str, ...]
    test_pairs: tuple[str, ...] | None
    test_labels: NDArray[np.int64]
    labels: tuple[str, ...]
    source: str

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            texts, pairs = getattr(self, f"{split}_texts"), getattr(self, f"{split}_pairs")
            targets = getattr(self, f"{split}_labels")
            if not texts:
                raise DatasetError(f"{self.name}: the {split} split is empty")
            if (pairs is None) != (self.task == "text-classification"):
                raise DatasetError(f"{self.name}: {split} pairs do not fit task {self.task}")
            if len(targets) != len(texts) or (pairs is not None and len(pairs) != len(texts)):
                raise DatasetError(f"{self.name}: {split} texts, pairs and labels differ in count")
            if targets.min() < 0 or targets.max() >= len(self.labels):
                raise DatasetError(f"{self.name}: {split} labels lie outside 0..{len(self.labels)}")

    @property
    def num_classes(self) -> int:
        return len(self.labels)


def read_text_csv(path: Path, *, name: str | None = None, source: str | None = None) -> TextDataset:
    """Read a `text,label` or `question1,question2,is_duplicate` CSV (UTF-8, header first) and
    split it stratified 80/20 with a fixed seed. Every problem is one DatasetError line."""
    name = name or path.stem
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            texts, pairs, raw_labels = _read_rows(csv.DictReader(f), path)
    except FileNotFoundError:
        raise DatasetError(
            f"{path}: no such file; give a CSV with a `text,label` or a "
            "`question1,question2,is_duplicate` header"
        ) from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None

    if pairs is None:
        labels = tuple(sorted(set(raw_labels)))
        task: TextTask = "text-classification"
    else:
        labels, task = PAIR_LABELS, "text-pair-classification"
    if len(set(raw_labels)) < 2:
        raise DatasetError(
            f"{path}: needs at least 2 different labels, found only {raw_labels[0]!r}"
        )
    index = {label: i for i, label in enumerate(labels)}
    targets = np.array([index[label] for label in raw_labels], dtype=np.int64)
    train, test = split_indices(targets)
    if not len(train) or not len(test):
        raise DatasetError(f"{path}: {len(targets)} rows are too few for an 80/20 split")

    def pick(values: list[str] | None, rows: NDArray[np.int64]) -> tuple[str, ...] | None:
        return None if values is None else tuple(values[i] for i in rows)

    return TextDataset(
        name=name,
        task=task,
        train_texts=tuple(texts[i] for i in train),
        train_pairs=pick(pairs, train),
        train_labels=targets[train],
        test_texts=tuple(texts[i] for i in test),
        test_pairs=pick(pairs, test),
        test_labels=targets[test],
        labels=labels,
        source=source
        or f"{path.name}, stratified {1 - TEST_FRACTION:.0%}/{TEST_FRACTION:.0%} split "
        f"with seed {SPLIT_SEED}",
    )


def _read_rows(
    reader: csv.DictReader[str], path: Path
) -> tuple[list[str], list[str] | None, list[str]]:
    """(texts, second texts or None, label strings) from the rows, checked line by line."""
    header = reader.fieldnames
    if not header:
        raise DatasetError(f"{path}: empty file; the first line must be the header")
    columns = {c.strip() for c in header}
    is_pair = any(c in columns for c in PAIR_COLUMNS)
    needed = PAIR_COLUMNS if is_pair else SINGLE_COLUMNS
    missing = [c for c in needed if c not in columns]
    if missing:
        raise DatasetError(
            f"{path}: missing column(s) {', '.join(missing)}; the header must name "
            f"{','.join(needed)} (found {','.join(header)})"
        )
    reader.fieldnames = [c.strip() for c in header]
    texts: list[str] = []
    pairs: list[str] | None = [] if is_pair else None
    labels: list[str] = []
    try:
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if None in row.values() or None in row:
                raise DatasetError(
                    f"{where}: the row has a different number of columns than the header"
                )
            text = row[needed[0]].strip()
            if not text:
                raise DatasetError(f"{where}: empty {needed[0]}")
            texts.append(text)
            label = row[needed[-1]].strip()
            if pairs is not None:
                second = row["question2"].strip()
                if not second:
                    raise DatasetError(f"{where}: empty question2")
                pairs.append(second)
                if label not in ("0", "1"):
                    raise DatasetError(f"{where}: is_duplicate must be 0 or 1, got {label!r}")
                label = PAIR_LABELS[int(label)]
            elif not label:
                raise DatasetError(f"{where}: empty label")
            labels.append(label)
    except csv.Error as exc:
        raise DatasetError(f"{path}:{reader.line_num}: not valid CSV ({exc})") from None
    if not texts:
        raise DatasetError(f"{path}: no data rows after the header")
    return texts, pairs, labels


def split_indices(targets: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Stratified train/test row indices (each in file order), the same for the same labels."""
    rng = np.random.default_rng(SPLIT_SEED)
    test: list[NDArray[np.int64]] = []
    for label in np.unique(targets):
        rows = rng.permutation(np.flatnonzero(targets == label))
        test.append(rows[: round(len(rows) * TEST_FRACTION)])
    is_test = np.zeros(len(targets), dtype=bool)
    is_test[np.concatenate(test)] = True
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)
