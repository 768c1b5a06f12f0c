"""`python -m bench.cuda_check`: the service's CUDA path, on a machine with a GPU.

Every bundled model is loaded twice by the service's own loader (`service.core.models.load_model`,
the code `python -m service` runs), once with DIGITSERVE_DEVICE=cuda and once with cpu. Real
inputs go through both, in the shapes the service sends: the 1,000 held-out MNIST PNGs of
`loadtest/mnist-test-png.zip` through the service's own decode and preprocessing
(`service.core.image.preprocess`), and the first 512 rows of `training/data/text-topics.csv`
through `modelrepo.text`. It prints, per model, the provider
onnxruntime really used, the largest absolute difference between the two outputs, whether
every argmax agrees, and inputs per second at batch 1 and 32 on each device; it exits 1 when a
model did not run on CUDA or the answers differ. Needs onnxruntime-gpu (the `gpu` extra, in
place of onnxruntime) and a visible GPU; it never imports torch.
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from loadtest.images import load_images
from modelrepo.manifest import ImagePreprocessing, TextPreprocessing
from modelrepo.text import encode_batch
from service.core.image import preprocess
from service.core.models import CUDA, LoadedModel, load_model, resolve_specs
from service.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-4  # float32 kernels differ between devices in the last bits
TIMED_S = 2.0


def inputs_for(model: LoadedModel, settings: ServiceSettings) -> NDArray[np.generic]:
    """The real inputs this model gets from the service, stacked."""
    spec = model.manifest.preprocessing
    if isinstance(spec, TextPreprocessing):
        with (ROOT / "training" / "data" / "text-topics.csv").open(newline="") as file:
            texts = [row["text"] for row, _ in zip(csv.DictReader(file), range(512), strict=False)]
        return encode_batch(texts, spec)
    assert isinstance(spec, ImagePreprocessing)
    limits = {"max_bytes": settings.max_upload_bytes, "max_pixels": settings.max_image_pixels}
    return np.concatenate([preprocess(data, spec, **limits) for _, data in load_images()])


def per_second(model: LoadedModel, x: NDArray[np.generic], batch: int) -> float:
    done, i, started = 0, 0, time.perf_counter()
    while time.perf_counter() - started < TIMED_S:
        start = (i * batch) % (len(x) - batch + 1)
        model.run(x[start : start + batch])
        done, i = done + batch, i + 1
    return done / (time.perf_counter() - started)


def main() -> int:
    gpu = ServiceSettings(model_repo=ROOT / "exports", device="cuda")
    cpu = ServiceSettings(model_repo=ROOT / "exports", device="cpu")
    failed = False
    print(
        "model | provider | max abs diff | argmax agree | "
        "cuda/s b1 | cuda/s b32 | cpu/s b1 | cpu/s b32"
    )
    for name, version in resolve_specs(gpu):
        on_gpu, on_cpu = load_model(gpu, name, version), load_model(cpu, name, version)
        x = inputs_for(on_gpu, gpu)
        for model in (on_gpu, on_cpu):  # warm-up: the first CUDA calls pick kernels
            model.run(x[:32])
        a = np.concatenate([on_gpu.run(x[i : i + 32]) for i in range(0, len(x), 32)])
        b = np.concatenate([on_cpu.run(x[i : i + 32]) for i in range(0, len(x), 32)])
        diff = float(np.abs(a - b).max())
        agree = bool((a.argmax(1) == b.argmax(1)).all())
        rates = [per_second(m, x, n) for m in (on_gpu, on_cpu) for n in (1, 32)]
        print(
            f"{on_gpu.key} | {on_gpu.provider} | {diff:.2e} | {agree} | "
            + " | ".join(f"{r:,.0f}" for r in rates),
            flush=True,
        )
        failed |= on_gpu.provider != CUDA or diff > TOLERANCE or not agree
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
