"""What every peer shares so that all of them do the same work per image: the bundled model's
manifest, the manifest's preprocessing, a one-thread onnxruntime session and the answer shape.

Nothing here imports torch or onnxruntime at module level: the naive peer must not pay for
onnxruntime, and the ONNX peers must not pay for torch.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from modelrepo.manifest import ImagePreprocessing, Manifest
from modelrepo.preprocess import image_to_pixels

if TYPE_CHECKING:
    import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = ROOT / "exports" / "mnist-cnn" / "1"
MODEL_PATH = MODEL_DIR / "model.onnx"
# The naive peer's torch weights: `make models` leaves them here, and `python -m training
# train` is deterministic on the CPU for a given thread count, so this run reproduces the same
# network (the same compute per image; the weights match MODEL_PATH's with one thread).
CHECKPOINT_DIR = ROOT / "runs" / "mnist-cnn"
CHECKPOINT = CHECKPOINT_DIR / "checkpoint.pt"
TRAIN_COMMAND = [
    sys.executable, "-m", "training", "train", "--arch", "mnist-cnn", "--dataset", "mnist-5k",
    "--epochs", "30", "--threads", "1", "--out", str(CHECKPOINT_DIR), "--force",  # when missing
]  # fmt: skip

Pixels = NDArray[np.uint8]
Answer = dict[str, Any]


@cache
def manifest() -> Manifest:
    return Manifest.read(MODEL_DIR / "model.json")


def spec() -> ImagePreprocessing:
    return manifest().image_preprocessing


def decode(data: bytes) -> Pixels:
    """Image file bytes -> (H, W, C) uint8 pixels, exactly as the service decodes them."""
    with Image.open(io.BytesIO(data)) as image:
        return image_to_pixels(image, spec())


def ort_session(threads: int = 1) -> ort.InferenceSession:
    """The bundled ONNX model on the CPU with `threads` intra-op threads and no spinning
    (spinning threads would steal the second core from the other worker)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(
        str(MODEL_PATH), sess_options=options, providers=["CPUExecutionProvider"]
    )


def answer(label: str, index: int, probability: float) -> Answer:
    """The answer shape every peer uses: the service's `predictions` list, top-1 only."""
    return {"predictions": [{"label": label, "index": index, "probability": probability}]}


def answers(logits: NDArray[np.float32]) -> list[Answer]:
    """(N, 10) logits -> one answer per row (softmax, argmax)."""
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    probabilities = np.exp(z)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    labels = manifest().labels
    out = []
    for row in probabilities:
        index = int(row.argmax())
        out.append(answer(labels[index], index, float(row[index])))
    return out


def ensure_checkpoint() -> Path:
    """The naive peer's checkpoint, trained (about 10 s) when it is missing."""
    if not CHECKPOINT.is_file():
        subprocess.run(TRAIN_COMMAND, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return CHECKPOINT


def port_parser(description: str) -> argparse.ArgumentParser:
    """--port for every peer; the host is fixed to loopback (nothing here is for a network)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, required=True)
    return parser


HOST = "127.0.0.1"
