"""Real digits as people send them, over a real server: the default model canonicalises each
upload exactly as offline preprocessing does, answers the right digit, and refuses an image
with no ink with 422 instead of guessing."""

from __future__ import annotations

import asyncio
import io

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.e2e.test_correctness import predict_all
from tests.helpers import Server, offline_probabilities
from training.variants import KINDS, corpus, held_out

DIGITS = 40  # of mnist-5k's held-out digits, each in every kind


@pytest.fixture(scope="module")
def variants() -> dict[str, tuple[list[bytes], np.ndarray]]:
    images, labels = held_out()
    by_kind: dict[str, tuple[list[bytes], np.ndarray]] = {}
    for kind in KINDS:
        files = [v.data for v in corpus(images[:DIGITS], labels[:DIGITS], (kind,))]
        by_kind[kind] = (files, labels[:DIGITS])
    return by_kind


def test_the_default_model_is_mnist_cnn_and_says_it_canonicalises(server: Server) -> None:
    models = httpx.get(f"{server.url}/models", timeout=10).json()
    assert models["default_model"] == "mnist-cnn"
    info = next(m for m in models["models"] if m["name"] == "mnist-cnn")
    assert info["dataset"] == "mnist-5k"
    assert info["preprocessing"]["canonical"]["kind"] == "digits"
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    assert 'dataset="mnist-5k"' in metrics and 'canonical="digits"' in metrics


@pytest.mark.parametrize("model", ["mnist-cnn", "mnist-lstm"])
@pytest.mark.parametrize("kind", KINDS)
def test_served_equals_offline_on_every_kind_of_upload(
    server: Server, variants: dict[str, tuple[list[bytes], np.ndarray]], model: str, kind: str
) -> None:
    files, labels = variants[kind]
    expected = offline_probabilities(model, files)
    answers = asyncio.run(predict_all(server.url, model, files, users=8))
    served = np.zeros_like(expected)
    for row, answer in zip(served, answers, strict=True):
        for p in answer["predictions"]:
            row[p["index"]] = p["probability"]
    np.testing.assert_allclose(served, expected, atol=1e-5)
    right = float((served.argmax(axis=1) == labels).mean())
    print(f"\n{model} {kind}: {right:.3f} right on {len(labels)} held-out digits")
    assert right >= 0.9  # the full corpus figures are bench.accuracy's; this is a floor


def blank(mode: str, colour: int | tuple[int, int, int], fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.new(mode, (300, 200), colour).save(out, fmt)
    return out.getvalue()


@pytest.mark.parametrize(
    "data",
    [blank("L", 255), blank("L", 0), blank("RGB", (200, 180, 40), "JPEG"), blank("L", 128)],
    ids=["white", "black", "yellow-jpeg", "grey"],
)
def test_an_image_without_ink_is_422_no_ink(server: Server, data: bytes) -> None:
    reply = httpx.post(
        f"{server.url}/predict", files={"image": ("blank.png", data, "image/png")}, timeout=10
    )
    assert reply.status_code == 422, reply.text
    body = reply.json()
    assert body["detail"]["reason"] == "no_ink"
    assert "no ink" in body["error"] + str(body.get("message", "")) + reply.text


def test_a_model_without_canonicalisation_still_answers_a_blank_image(server: Server) -> None:
    reply = httpx.post(
        f"{server.url}/predict",
        files={"image": ("blank.png", blank("L", 0), "image/png")},
        data={"model": "digits-cnn"},
        timeout=10,
    )
    assert reply.status_code == 200, reply.text
