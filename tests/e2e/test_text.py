"""/predict/text against a real server: the same answers as offline onnxruntime with the
manifest's tokenizer, and a clear 4xx for every mistake."""

from __future__ import annotations

import csv
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from modelrepo.manifest import Manifest
from modelrepo.text import encode
from tests.helpers import ROOT, Server

MODEL_DIR = ROOT / "exports" / "text-topics" / "1"


def texts(n: int) -> list[str]:
    with (ROOT / "training" / "data" / "text-topics.csv").open(newline="") as f:
        return [row["text"] for _, row in zip(range(n), csv.DictReader(f), strict=False)]


def offline(batch: list[str]) -> np.ndarray:
    manifest = Manifest.read(MODEL_DIR / "model.json")
    spec = manifest.text_preprocessing
    session = ort.InferenceSession(
        str(MODEL_DIR / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    x = np.stack([encode(t, spec) for t in batch])
    logits = session.run(None, {manifest.input.name: x})[0]
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def test_served_equals_offline(server: Server) -> None:
    batch = [*texts(120), "Ünïcödé words, an UNKNOWN zyzzyva and digits 42", "a"]
    labels = Manifest.read(MODEL_DIR / "model.json").labels
    expected = offline(batch)

    def ask(text: str) -> dict[str, Any]:
        body = {"text": text, "top_k": len(labels)}
        r = httpx.post(f"{server.url}/predict/text", json=body, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()

    with ThreadPoolExecutor(16) as pool:  # concurrent: they are batched together
        answers = list(pool.map(ask, batch))
    for answer, probs in zip(answers, expected, strict=True):
        assert answer["model"] == "text-topics"
        served = {p["label"]: p["probability"] for p in answer["predictions"]}
        assert max(abs(served[label] - probs[i]) for i, label in enumerate(labels)) < 1e-5


LONG = "word " * 1000  # 5000 characters: over the model's max_text_chars (2000)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"text": ""}, 422),
        ({"text": "   \n\t "}, 422),
        ({"text": "..."}, 200),  # no word tokens but not empty: all padding, still an answer
        ({"text": LONG}, 422),
        ({}, 422),
        ({"text": None}, 422),
        ({"text": 5}, 422),
        ({"text": "hello", "text_pair": "world"}, 422),  # a single-text model
        ({"text": "hello", "model": "digits-cnn"}, 422),  # an image model
        ({"text": "hello", "model": "nope"}, 404),
        ({"text": "hello", "model": "../../etc/passwd"}, 404),
        ({"text": "hello", "version": 9}, 404),
        ({"text": "hello", "version": 0}, 422),
        ({"text": "hello", "top_k": 0}, 422),
        ({"text": "hello", "top_k": 5}, 422),  # 4 classes
        ({"text": "hello", "extra": 1}, 422),
    ],
)
def test_text_errors(server: Server, body: dict[str, object], status: int) -> None:
    r = httpx.post(f"{server.url}/predict/text", json=body, timeout=30)
    assert r.status_code == status, r.text
    if status != 200:
        assert set(r.json()) == {"error", "detail"}


def test_text_needs_json(server: Server) -> None:
    r = httpx.post(f"{server.url}/predict/text", content=b"text=hello", timeout=30,
                   headers={"content-type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert r.status_code == 415 and set(r.json()) == {"error", "detail"}
    r = httpx.post(f"{server.url}/predict/text", content=b"{not json", timeout=30,
                   headers={"content-type": "application/json"})  # fmt: skip
    assert r.status_code == 422 and "not valid JSON" in r.json()["detail"][0]["message"]
