"""Peer 3: LitServe serving the same ONNX file with its dynamic batching on.

    python -m bench.servers.litserve_onnx --port N

Configured as LitServe documents batching on a CPU: `max_batch_size=32`, `batch_timeout=0.005`,
two inference workers (`workers_per_device=2`, one per core, accelerator cpu), each with a
one-thread onnxruntime session; LitServe starts one HTTP server process per worker. Access log
off (uvicorn `log_level="warning"`), no client.py written, health at /health.
"""

# No `from __future__ import annotations`: LitServe reads decode_request's annotation at run
# time and must see the Request class itself, not a string.

import io
from typing import Any, cast

import litserve as ls  # type: ignore[import-untyped, unused-ignore]  # untyped
import numpy as np
from numpy.typing import NDArray
from PIL import Image
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request

from bench.servers.common import HOST, Answer, Pixels, answers, ort_session, port_parser, spec
from modelrepo.preprocess import image_to_pixels, pixels_to_input

MAX_BATCH_SIZE = 32
BATCH_TIMEOUT_S = 0.005
WORKERS = 2


class DigitsAPI(ls.LitAPI):
    """decode one upload per request, stack the batch, one onnxruntime call, one answer each."""

    def setup(self, device: str) -> None:
        self.session = ort_session(threads=1)
        self.input_name = self.session.get_inputs()[0].name

    def decode_request(self, request: Request, **kwargs: Any) -> Pixels:
        # The annotation makes LitServe parse the body: a multipart body arrives as FormData.
        form = cast(FormData, request)
        upload = form["image"]
        if not isinstance(upload, UploadFile):
            raise ValueError("the 'image' part must be a file")
        with Image.open(io.BytesIO(upload.file.read())) as image:
            return image_to_pixels(image, spec())

    def batch(self, inputs: list[Pixels]) -> NDArray[np.float32]:
        return pixels_to_input(np.stack(inputs), spec())

    def predict(self, x: NDArray[np.float32], **kwargs: Any) -> list[Answer]:
        logits = self.session.run(None, {self.input_name: x})[0]
        return answers(logits)

    def unbatch(self, output: list[Answer]) -> list[Answer]:
        return output

    def encode_response(self, output: Answer, **kwargs: Any) -> Answer:
        return output


def main() -> None:
    args = port_parser(__doc__ or "").parse_args()
    api = DigitsAPI(max_batch_size=MAX_BATCH_SIZE, batch_timeout=BATCH_TIMEOUT_S)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=WORKERS)
    server.run(host=HOST, port=args.port, log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main()
