"""Logits -> probabilities -> the ranked predictions a response carries."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from service.core.postprocess import Prediction, softmax, top_k

LABELS = [str(i) for i in range(10)]


def test_softmax_rows_sum_to_one_and_match_the_formula() -> None:
    logits = np.random.default_rng(0).normal(0, 3, size=(5, 10)).astype(np.float32)
    p = softmax(logits)
    assert p.shape == (5, 10)
    assert p.dtype == np.float64
    assert np.allclose(p.sum(axis=1), 1.0, atol=1e-12)
    expected = np.exp(logits.astype(np.float64))
    expected /= expected.sum(axis=1, keepdims=True)
    assert np.allclose(p, expected, rtol=1e-12, atol=0)
    assert np.array_equal(p.argmax(axis=1), logits.argmax(axis=1))


def test_softmax_of_two_logits() -> None:
    p = softmax(np.array([0.0, math.log(3.0)], dtype=np.float32))
    assert p == pytest.approx([0.25, 0.75], abs=1e-7)


@pytest.mark.parametrize(
    "logits",
    [[1000.0, 1001.0], [-1000.0, -1001.0], [3.0e38, 3.0e38 - 1e32], [88.0, 89.0, 1000.0]],
)
def test_softmax_is_stable_for_large_logits(logits: list[float]) -> None:
    # Any overflow or invalid operation fails the test (underflow to 0 is the right answer).
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        p = softmax(np.array(logits, dtype=np.float32))
    assert np.isfinite(p).all()
    assert p.sum() == pytest.approx(1.0, abs=1e-12)


def test_softmax_of_1000_1001_is_exact() -> None:
    p = softmax(np.array([[1000.0, 1001.0]], dtype=np.float32))
    e = math.e
    assert p[0] == pytest.approx([1 / (1 + e), e / (1 + e)], rel=1e-12)


def test_softmax_does_not_modify_its_input() -> None:
    for dtype in (np.float32, np.float64):
        logits: NDArray[Any] = np.array([[1.0, 2.0, 3.0]], dtype=dtype)
        before = logits.copy()
        softmax(logits)
        assert np.array_equal(logits, before)


def test_softmax_equal_logits_are_uniform() -> None:
    p = softmax(np.zeros((2, 4), dtype=np.float32))
    assert np.array_equal(p, np.full((2, 4), 0.25))


def test_top_k_orders_by_probability() -> None:
    logits = np.array([0.1, 2.0, -1.0, 5.0, 0.0, 3.0, 0.2, -3.0, 1.0, 4.0], dtype=np.float32)
    predictions = top_k(logits, LABELS, 3)
    assert [p.index for p in predictions] == [3, 9, 5]
    assert [p.label for p in predictions] == ["3", "9", "5"]
    probabilities = softmax(logits[None])[0]
    for p in predictions:
        assert isinstance(p, Prediction)
        assert p.probability == pytest.approx(float(probabilities[p.index]), abs=0)


def test_top_1_is_the_argmax() -> None:
    logits = np.random.default_rng(1).normal(size=10).astype(np.float32)
    (best,) = top_k(logits, LABELS, 1)
    assert best.index == int(np.argmax(logits))
    assert best.label == LABELS[best.index]
    assert 0 < best.probability <= 1


def test_top_k_with_k_equal_to_the_classes_ranks_them_all() -> None:
    labels = ["cat", "dog", "bird", "fish", "frog"]
    logits = np.array([0.5, -2.0, 3.0, 1.5, 0.0], dtype=np.float32)
    predictions = top_k(logits, labels, len(labels))
    assert [p.index for p in predictions] == [2, 3, 0, 4, 1]
    assert [p.label for p in predictions] == ["bird", "fish", "cat", "frog", "dog"]
    probabilities = [p.probability for p in predictions]
    assert probabilities == sorted(probabilities, reverse=True)
    assert len(set(probabilities)) == len(probabilities)  # strictly descending here
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-12)


def test_top_k_ties_keep_the_lower_index_first() -> None:
    logits = np.array([1.0, 3.0, 0.0, 3.0, 1.0, 3.0], dtype=np.float32)
    labels = ["a", "b", "c", "d", "e", "f"]
    predictions = top_k(logits, labels, 6)
    assert [p.index for p in predictions] == [1, 3, 5, 0, 4, 2]
    assert [p.label for p in predictions] == ["b", "d", "f", "a", "e", "c"]
    assert predictions[0].probability == predictions[1].probability == predictions[2].probability


def test_top_k_all_equal_is_index_order() -> None:
    predictions = top_k(np.zeros(10, dtype=np.float32), LABELS, 10)
    assert [p.index for p in predictions] == list(range(10))
    assert all(p.probability == pytest.approx(0.1) for p in predictions)


def test_top_k_is_stable_for_large_logits() -> None:
    predictions = top_k(np.array([1000.0, 1001.0], dtype=np.float32), ["a", "b"], 2)
    assert [p.label for p in predictions] == ["b", "a"]
    assert all(math.isfinite(p.probability) for p in predictions)
    assert predictions[0].probability == pytest.approx(math.e / (1 + math.e), rel=1e-12)


@pytest.mark.parametrize("length", [9, 11, 0])
def test_top_k_wrong_number_of_logits_is_a_value_error(length: int) -> None:
    with pytest.raises(ValueError, match="expected 10 logits"):
        top_k(np.zeros(length, dtype=np.float32), LABELS, 3)


def test_top_k_wants_one_image_of_logits() -> None:
    with pytest.raises(ValueError, match=r"\(1, 10\)"):
        top_k(np.zeros((1, 10), dtype=np.float32), LABELS, 3)
    with pytest.raises(ValueError):
        top_k(np.float32(1.0) * np.ones((), dtype=np.float32), LABELS, 1)
