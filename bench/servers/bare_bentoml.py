"""Peer 4: the documented minimal adaptive-batching BentoML service over the same ONNX file.

    python -m bench.servers.bare_bentoml --port N
    # = bentoml serve bench.servers.bare_bentoml:Bare --host 127.0.0.1 --port N

One class, `workers=2`, one batchable API taking PIL images (BentoML decodes the multipart part
`image`, a list of one per request, and merges concurrent requests into one call of up to 32),
a one-thread onnxruntime session per worker. Only the access log is turned off, as in every
peer; everything else is BentoML's default.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import bentoml
import numpy as np
from PIL import Image

from bench.servers.common import HOST, ROOT, Answer, answers, ort_session, port_parser, spec
from modelrepo.preprocess import image_to_pixels, pixels_to_input


@bentoml.service(workers=2, logging={"access": {"enabled": False}})
class Bare:
    def __init__(self) -> None:
        self.session = ort_session(threads=1)
        self.input_name = self.session.get_inputs()[0].name

    @bentoml.api(batchable=True, max_batch_size=32, max_latency_ms=1000, route="/predict")
    def predict(self, image: list[Image.Image]) -> list[Answer]:
        pixels = np.stack([image_to_pixels(one, spec()) for one in image])
        logits = self.session.run(None, {self.input_name: pixels_to_input(pixels, spec())})[0]
        return answers(logits)


def main() -> None:
    args = port_parser(__doc__ or "").parse_args()
    env = {**os.environ, "BENTOML_DO_NOT_TRACK": "true"}
    # BentoML empties BENTOML_HOME's Prometheus folder at start: a folder of its own per port
    # keeps it off any other BentoML server's files.
    env["BENTOML_HOME"] = str(Path(tempfile.gettempdir()) / f"bench-bare-bentoml-{args.port}")
    command = [
        sys.executable, "-m", "bentoml", "serve", "bench.servers.bare_bentoml:Bare",
        "--host", HOST, "--port", str(args.port), "--working-dir", str(ROOT),
    ]  # fmt: skip
    os.execve(sys.executable, command, env)  # keeps the PID, so signals reach bentoml directly


if __name__ == "__main__":
    main()
