"""Text CSV reading (one text or Quora pairs), its one-line errors, and the bundled synthetic
data set."""

from pathlib import Path

import numpy as np
import pytest

from tests.unit.conftest import write_pairs_csv, write_topics_csv
from training.data import TEXT_DATASETS, DatasetError, load_text_dataset, topics
from training.data.text import PAIR_LABELS, read_text_csv


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_single_text_csv_is_split_stratified_and_reproducibly(tmp_path: Path) -> None:
    path = write_topics_csv(tmp_path / "t.csv", per_topic=25)
    ds = read_text_csv(path)
    assert (ds.name, ds.task, ds.labels) == (
        "t",
        "text-classification",
        tuple(sorted(topics.TOPICS)),
    )
    assert ds.train_pairs is None and ds.test_pairs is None
    assert len(ds.train_texts) + len(ds.test_texts) == 100
    assert ds.train_labels.dtype == np.int64
    # 20% of every class is held out (labels are noisy, so classes are not exactly 25 rows).
    for label in range(4):
        n = int((ds.train_labels == label).sum() + (ds.test_labels == label).sum())
        assert int((ds.test_labels == label).sum()) == round(n * 0.2)
    again = read_text_csv(path)
    assert again.test_texts == ds.test_texts
    np.testing.assert_array_equal(again.test_labels, ds.test_labels)


def test_quora_pairs_with_extra_columns(tmp_path: Path) -> None:
    ds = read_text_csv(write_pairs_csv(tmp_path / "quora.csv", rows=40))
    assert ds.task == "text-pair-classification" and ds.labels == PAIR_LABELS
    assert ds.train_pairs is not None and ds.test_pairs is not None
    assert len(ds.train_pairs) == len(ds.train_texts) == 32 and len(ds.test_texts) == 8
    assert set(ds.test_labels.tolist()) == {0, 1}


def test_quoted_commas_newlines_and_a_bom(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    rows = "".join(f'"hello, world {i}\nsecond line",{"ab"[i % 2]}\n' for i in range(10))
    path.write_bytes(("\ufefftext,label\n" + rows).encode("utf-8"))
    ds = read_text_csv(path)
    assert ds.labels == ("a", "b")
    assert all(t.startswith("hello, world") and "\n" in t for t in ds.train_texts)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty file"),
        ("text,label\n", "no data rows"),
        ("words,label\nhi,a\n", "missing column(s) text"),
        ("question1,question2\na,b\n", "missing column(s) is_duplicate"),
        ("text,label\nhi,a\n ,b\n", "t.csv:3: empty text"),
        ("text,label\nhi,a\nho,\n", "t.csv:3: empty label"),
        ("text,label\nhi,a\nho\n", "t.csv:3: the row has a different number of columns"),
        ("text,label\nhi,a\nho,b,c\n", "t.csv:3: the row has a different number of columns"),
        ("question1,question2,is_duplicate\na,b,1\nc,d,yes\n", "t.csv:3: is_duplicate must be"),
        ("question1,question2,is_duplicate\na,,1\n", "t.csv:2: empty question2"),
        ("text,label\nhi,a\nho,a\n", "at least 2 different labels"),
        ("text,label\nhi,a\nho,b\n", "too few for an 80/20 split"),
    ],
)
def test_bad_csv_files_are_one_clear_line(tmp_path: Path, content: str, message: str) -> None:
    with pytest.raises(DatasetError) as info:
        read_text_csv(write(tmp_path / "t.csv", content))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_and_undecodable_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such file"):
        read_text_csv(tmp_path / "none.csv")
    (tmp_path / "latin1.csv").write_bytes("text,label\ncaf\xe9,a\n".encode("latin-1"))
    with pytest.raises(DatasetError, match="not UTF-8"):
        read_text_csv(tmp_path / "latin1.csv")


def test_load_text_dataset_by_name_path_or_data_dir(tmp_path: Path) -> None:
    write_topics_csv(tmp_path / "mine.csv", per_topic=10)
    assert load_text_dataset(str(tmp_path / "mine.csv")).name == "mine"
    assert load_text_dataset("mine.csv", tmp_path).name == "mine"
    with pytest.raises(DatasetError, match="unknown text data set 'digits'"):
        load_text_dataset("digits")


def test_bundled_topics_csv_is_what_the_generator_writes() -> None:
    # The shipped file is reproducible: regenerating it must give the same bytes.
    assert topics.CSV_PATH.read_text(encoding="utf-8") == topics.csv_text(topics.generate_rows())
    assert topics.CSV_PATH.stat().st_size < 500_000
    assert topics.main(["--check"]) == 0


def test_bundled_topics_dataset_says_it_is_synthetic() -> None:
    assert "text-topics" in TEXT_DATASETS
    ds = load_text_dataset("text-topics")
    assert ds.labels == tuple(sorted(topics.TOPICS))
    assert (len(ds.train_texts), len(ds.test_texts)) == (3199, 801)
    assert "synthetic" in ds.source and "not real text" in ds.source


def test_generator_is_seeded_noisy_and_balanced() -> None:
    rows = topics.generate_rows(seed=3, per_topic=200)
    assert rows == topics.generate_rows(seed=3, per_topic=200)
    assert rows != topics.generate_rows(seed=4, per_topic=200)
    assert len(rows) == 800 and len({text for text, _ in rows}) > 600
    # Some rows carry a phrase of another topic: the task is not solved by one keyword.
    food_phrases = {p for slot in topics.PHRASES["food"].values() for p in slot}
    mixed = [
        t for t, label in rows if label != "food" and any(p in t.lower() for p in food_phrases)
    ]
    assert 20 < len(mixed) < 200
