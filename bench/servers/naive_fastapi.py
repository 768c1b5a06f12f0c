"""Peer 2: what a user writes from a tutorial: FastAPI + PyTorch eager, one image per call.

    python -m bench.servers.naive_fastapi --port N                              # 2a
    python -m bench.servers.naive_fastapi --port N --workers 2 --torch-threads 1  # 2b, tuned

The handler is the tutorial's: read the upload, decode with Pillow, the manifest's
preprocessing, `torch.no_grad()` forward, softmax, argmax. Uvicorn runs it with its defaults
(uvloop + httptools when installed, as here) and no access log, like every peer.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

# At module level: FastAPI resolves the handler's (string) annotations in these globals.
from fastapi import FastAPI, File, UploadFile

from bench.servers.common import (
    HOST,
    answer,
    decode,
    ensure_checkpoint,
    manifest,
    port_parser,
    spec,
)

THREADS_ENV = "BENCH_TORCH_THREADS"


def create_app() -> FastAPI:
    """The FastAPI app, built in each uvicorn worker (uvicorn's `factory=True`), so the
    supervisor process never imports torch and each worker sets its threads before it does."""
    threads = os.environ.get(THREADS_ENV)
    if threads:
        # OpenMP reads this once, when torch loads it: it must be set before `import torch`.
        os.environ["OMP_NUM_THREADS"] = threads
    import torch

    from modelrepo.preprocess import pixels_to_input
    from training.checkpoint import load_checkpoint, rebuild_model

    if threads:
        torch.set_num_threads(int(threads))
    model = rebuild_model(load_checkpoint(ensure_checkpoint()))
    labels = manifest().labels
    app = FastAPI(title="naive digits classifier")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/predict")
    async def predict(image: Annotated[UploadFile, File()]) -> dict[str, Any]:
        x = torch.from_numpy(pixels_to_input(decode(await image.read()), spec()))
        with torch.no_grad():
            probabilities = torch.softmax(model(x), dim=1)[0]
        index = int(probabilities.argmax())
        return answer(labels[index], index, float(probabilities[index]))

    return app


def main() -> None:
    parser = port_parser(__doc__ or "")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument(
        "--torch-threads", type=int, help="torch threads per worker (default: torch's own)"
    )
    args = parser.parse_args()
    if args.torch_threads:
        os.environ[THREADS_ENV] = str(args.torch_threads)  # inherited by the spawned workers
    ensure_checkpoint()  # train once here, not in every worker at once
    import uvicorn

    uvicorn.run(
        "bench.servers.naive_fastapi:create_app",
        factory=True,
        host=HOST,
        port=args.port,
        workers=args.workers,
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
