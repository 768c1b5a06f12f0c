"""Peer 5: the practical limit of a Python server on this machine, the reference to approach.

    python -m bench.servers.bare_starlette --port N

A bare Starlette app on uvicorn with uvloop + httptools, 2 worker processes (one per core),
no access log, no middleware. The handler does only the work every peer must do: read the
multipart form, decode + preprocess, onnxruntime at batch 1 (one thread), a JSON answer.
No batching, validation, metrics or error shape: whatever this service spends beyond this
server is its overhead.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from bench.servers.common import HOST, answers, decode, ort_session, port_parser, spec
from modelrepo.preprocess import pixels_to_input

WORKERS = 2


def create_app() -> Starlette:
    """Built in each worker (uvicorn `factory=True`): one onnxruntime session per process."""
    session = ort_session(threads=1)
    input_name = session.get_inputs()[0].name

    async def health(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    async def predict(request: Request) -> JSONResponse:
        form = await request.form()
        upload = form.get("image")
        if not isinstance(upload, UploadFile):
            return JSONResponse({"error": "send the image as multipart part 'image'"}, 400)
        x = pixels_to_input(decode(await upload.read()), spec())
        return JSONResponse(answers(session.run(None, {input_name: x})[0])[0])

    return Starlette(
        routes=[Route("/health", health), Route("/predict", predict, methods=["POST"])]
    )


def main() -> None:
    args = port_parser(__doc__ or "").parse_args()
    import uvicorn

    uvicorn.run(
        "bench.servers.bare_starlette:create_app",
        factory=True,
        host=HOST,
        port=args.port,
        workers=WORKERS,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
