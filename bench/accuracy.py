"""`python -m bench.accuracy`: each digit model's accuracy on real digits as people send them.

The corpus is `training.variants` made from mnist-5k's 1,000 held-out digits (never trained
on): as MNIST stores them, dark ink on paper, large RGB scans, small digits on a big canvas
and JPEG phone photos. Every file goes through the server's own decode and preprocessing
(`service.core.image.preprocess`) and the model's ONNX graph on onnxruntime, as `/predict`
would; served == offline is proven over HTTP by tests/e2e/test_canonical.py. Images the
model refuses for having no ink count as wrong.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tqdm import tqdm

from modelrepo.layout import list_versions, open_version
from modelrepo.manifest import ImagePreprocessing
from service.core.errors import NoInk
from service.core.image import preprocess
from training.variants import KINDS, corpus, held_out

ROOT = Path(__file__).resolve().parents[1]
LIMITS = {"max_bytes": 10 * 1024 * 1024, "max_pixels": 25_000_000}  # the service's defaults


def accuracy_by_kind(
    repo: Path, name: str, kinds: tuple[str, ...], limit: int | None = None
) -> dict[str, float]:
    """Accuracy per variant kind of the newest version of model `name`."""
    version = open_version(repo, name, list_versions(repo, name)[-1])
    spec = version.manifest.preprocessing
    assert isinstance(spec, ImagePreprocessing), f"{name} is not an image model"
    session = ort.InferenceSession(str(version.model_path), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    images, labels = held_out()
    if limit:
        images, labels = images[:limit], labels[:limit]
    right: Counter[str] = Counter()
    seen: Counter[str] = Counter()
    no_ink: Counter[str] = Counter()
    for variant in tqdm(corpus(images, labels, kinds), total=len(images) * len(kinds), desc=name):
        seen[variant.kind] += 1
        try:
            x = preprocess(variant.data, spec, **LIMITS)
        except NoInk:
            no_ink[variant.kind] += 1
            continue
        logits = session.run(None, {input_name: x})[0]
        right[variant.kind] += int(np.argmax(logits[0]) == variant.label)
    for kind in kinds:
        if no_ink[kind]:
            print(f"  {name} {kind}: {no_ink[kind]} refused as no ink", file=sys.stderr)
    return {kind: right[kind] / seen[kind] for kind in kinds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.accuracy", description=__doc__)
    parser.add_argument("--models", default="mnist-cnn,mnist-lstm", help="comma-separated")
    parser.add_argument("--repo", type=Path, default=ROOT / "exports", help="model repository")
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated subset")
    parser.add_argument("--limit", type=int, help="only the first N held-out digits")
    args = parser.parse_args(argv)
    kinds = tuple(args.kinds.split(","))
    rows = {m: accuracy_by_kind(args.repo, m, kinds, args.limit) for m in args.models.split(",")}
    print("| model | " + " | ".join(kinds) + " |")
    print("|---|" + "---:|" * len(kinds))
    for model, accuracy in rows.items():
        print(f"| {model} | " + " | ".join(f"{accuracy[k]:.3f}" for k in kinds) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
