"""For the same image bytes the server answers what offline onnxruntime answers, over the whole
bundled digits test split, while concurrent requests are batched together."""

import asyncio
import re

import httpx
import numpy as np
import pytest

from modelrepo.layout import list_versions
from tests.helpers import EXPORTS, Server, digits_test_pngs, offline_probabilities


async def predict_all(url: str, model: str, pngs: list[bytes], users: int = 32) -> list[dict]:
    """Every image as its own /predict request, `users` at a time; refused ones again."""
    limits = httpx.Limits(max_connections=users)
    semaphore = asyncio.Semaphore(users)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:

        async def one(data: bytes) -> dict:
            async with semaphore:
                # A refusal (503) is the gate doing its job on a slow or busy machine; like a
                # real client, ask again a little later (bounded: 40 tries).
                for _ in range(40):
                    r = await client.post(
                        "/predict",
                        files={"image": ("d.png", data, "image/png")},
                        data={"model": model, "top_k": "10"},
                    )
                    if r.status_code != 503:
                        break
                    await asyncio.sleep(0.25)
                assert r.status_code == 200, r.text
                return r.json()

        return await asyncio.gather(*(one(d) for d in pngs))


def batch_histogram(metrics: str, model: str) -> tuple[float, float, float]:
    """From digitserve_batch_images of the model's latest version: (calls with one image, all
    calls, all images)."""
    labels = f'model="{model}",version="{list_versions(EXPORTS, model)[-1]}"'
    value = {
        key: float(re.search(pattern.format(labels=labels), metrics)[1])  # type: ignore[index]
        for key, pattern in {
            "single": r'digitserve_batch_images_bucket\{{le="1.0",{labels}\}} ([0-9.e+]+)',
            "calls": r"digitserve_batch_images_count\{{{labels}\}} ([0-9.e+]+)",
            "images": r"digitserve_batch_images_sum\{{{labels}\}} ([0-9.e+]+)",
        }.items()
    }
    return value["single"], value["calls"], value["images"]


@pytest.mark.parametrize("model", ["digits-cnn", "digits-lstm"])
def test_http_equals_offline_onnxruntime_on_the_whole_test_split(
    server: Server, model: str
) -> None:
    pngs, labels = digits_test_pngs()
    expected = offline_probabilities(model, pngs)  # (N, 10)
    answers = asyncio.run(predict_all(server.url, model, pngs))

    served = np.zeros_like(expected)
    for row, answer in zip(served, answers, strict=True):
        for p in answer["predictions"]:
            row[p["index"]] = p["probability"]
    assert len(answers) == len(labels) == 360
    # Identical predictions, not just similar accuracy:
    np.testing.assert_array_equal(served.argmax(1), expected.argmax(1))
    # Batched or not, the probabilities agree to float32 rounding.
    np.testing.assert_allclose(served, expected, atol=1e-5)
    accuracy = float((served.argmax(1) == labels).mean())
    manifest_accuracy = httpx.get(f"{server.url}/models").json()["models"]
    recorded = next(m["test_accuracy"] for m in manifest_accuracy if m["name"] == model)
    assert accuracy == pytest.approx(recorded, abs=1e-6)


def test_concurrent_requests_share_onnxruntime_calls(server: Server) -> None:
    pngs, _ = digits_test_pngs()
    asyncio.run(predict_all(server.url, "digits-cnn", pngs, users=64))
    single, calls, images = batch_histogram(httpx.get(f"{server.url}/metrics").text, "digits-cnn")
    assert images >= len(pngs)
    assert calls < images, "every onnxruntime call held one image: no batching happened"
    assert single < calls
