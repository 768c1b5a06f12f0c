"""The Open Inference Protocol (KServe V2, as Triton speaks it) over REST, on the same models,
batchers and metrics as the rest of the API.

Stages of an inference request: check the headers -> parse the JSON body (pydantic) -> resolve
the model -> decode the input tensor against the model's input -> batch + infer -> encode the
requested outputs. JSON tensors only: the binary tensor extension is refused with a 400 that says
so. Errors on these paths have the protocol's shape, `{"error": "..."}` (`error_body`, which the
layers in front of the routes use too: service/http/surfaces.py).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import Headers
from starlette.routing import Match

from service.core.dataplane import DataPlane
from service.core.errors import (
    ApiError,
    BadRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from service.core.models import LoadedModel
from service.http.context import call_of, dataplane_of

PREFIX = "/v2"
PLATFORM = "onnxruntime_onnx"
INFER_ENDPOINT = "/v2/infer"  # the endpoint label of digitserve_requests_total
BINARY_HEADER = "inference-header-content-length"

# onnxruntime's element types -> the protocol's datatypes.
DATATYPES: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(bfloat16)": "BF16",
    "tensor(string)": "BYTES",
}
# The datatypes an input may have here, and the JSON values (numpy kinds) each accepts.
INPUT_DTYPES: dict[str, type[np.generic]] = {"FP32": np.float32, "INT64": np.int64}
JSON_KINDS = {"FP32": "iuf", "INT64": "iu"}
INT64_MAX = np.iinfo(np.int64).max


def owns(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def endpoint(path: str) -> str | None:
    """Inference paths (`/v2/models/{name}[/versions/{v}]/infer`) are counted as one endpoint."""
    return INFER_ENDPOINT if path.startswith("/v2/models/") and path.endswith("/infer") else None


def error_body(exc: ApiError) -> dict[str, Any]:
    """The protocol's clients read errors as {"error": "..."}."""
    return {"error": exc.message}


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProtocolError(_Body):
    error: str = Field(
        description="what went wrong, for people",
        examples=["model 'nope' is not loaded"],
    )


class LiveResponse(_Body):
    live: bool = Field(description="the server answers", examples=[True])


class ServerReadyResponse(_Body):
    ready: bool = Field(description="every model is loaded and warmed", examples=[True])


class ModelReadyResponse(_Body):
    name: str = Field(description="the model asked about", examples=["digits-cnn"])
    ready: bool = Field(description="the model can serve inference requests", examples=[True])


class ServerMetadataResponse(_Body):
    name: str = Field(description="the server's name", examples=["digitserve"])
    version: str = Field(description="the server's version", examples=["0.1.0"])
    extensions: list[str] = Field(
        description="protocol extensions supported (none: JSON tensors only)", examples=[[]]
    )


class MetadataTensor(_Body):
    name: str = Field(description="tensor name in the ONNX graph", examples=["input"])
    datatype: str = Field(description="element type, e.g. FP32 or INT64", examples=["FP32"])
    shape: list[int] = Field(description="-1 marks a dynamic axis", examples=[[-1, 1, 8, 8]])


class ModelMetadataResponse(_Body):
    name: str = Field(examples=["digits-cnn"])
    versions: list[str] = Field(description="loaded versions of this model", examples=[["1"]])
    platform: str = Field(description="the backend that runs it", examples=[PLATFORM])
    inputs: list[MetadataTensor] = Field(description="the tensors a request must send")
    outputs: list[MetadataTensor] = Field(description="the tensors a request may ask for")


class RequestInput(_Body):
    name: str = Field(description="the model's input name", examples=["input"])
    shape: list[int] = Field(
        description="the whole batch's shape; the first axis is the batch", examples=[[1, 1, 8, 8]]
    )
    datatype: str = Field(description="must be the model input's datatype", examples=["FP32"])
    parameters: dict[str, Any] | None = Field(None, description="accepted and ignored")
    data: list[Any] = Field(
        description="the tensor's values in row-major order, as a flat list or nested lists",
        examples=[[0.0] * 64],
    )


class RequestOutput(_Body):
    name: str = Field(description="an output of the model", examples=["logits"])
    parameters: dict[str, Any] | None = Field(
        None, description="accepted and ignored (outputs are always answered as JSON)"
    )


class InferenceRequest(_Body):
    id: str | None = Field(None, description="echoed in the response", examples=["42"])
    parameters: dict[str, Any] | None = Field(None, description="accepted and ignored")
    inputs: list[RequestInput] = Field(min_length=1, description="the model's one input tensor")
    outputs: list[RequestOutput] | None = Field(
        None, description="outputs to return; default: all of them"
    )


class ResponseOutput(_Body):
    name: str = Field(examples=["logits"])
    datatype: str = Field(examples=["FP32"])
    shape: list[int] = Field(examples=[[1, 10]])
    data: list[float] | list[int] = Field(description="row-major values (logits, not softmax)")


class InferenceResponse(_Body):
    model_name: str = Field(examples=["digits-cnn"])
    model_version: str = Field(description="the version that answered", examples=["1"])
    id: str | None = Field(None, description="the request's id, when it gave one")
    outputs: list[ResponseOutput]


class ProtocolRoute(APIRoute):
    """Refuses bodies these endpoints cannot read before FastAPI parses them, and answers an
    invalid body with the protocol's 400 instead of the API's 422."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            check_headers(request.headers, has_body=self.body_field is not None)
            try:
                return await handler(request)
            except RequestValidationError as exc:
                raise BadRequest(describe_invalid(exc)) from None

        return handle


def check_headers(headers: Headers, *, has_body: bool) -> None:
    """Refuse what would otherwise be misread as a malformed JSON body."""
    if BINARY_HEADER in headers:
        raise BadRequest(
            "binary tensor data is not supported; send JSON (no Inference-Header-Content-Length "
            "header; with tritonclient, binary_data=False on inputs and outputs)"
        )
    content_type = headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if has_body and content_type != "application/json" and not content_type.endswith("+json"):
        raise UnsupportedMediaType(
            f"send the inference request as JSON (Content-Type: application/json), "
            f"not {content_type}"
        )


def describe_invalid(exc: RequestValidationError) -> str:
    problems = []
    for err in exc.errors():
        if err["type"] == "json_invalid":
            problems.append(f"the body is not valid JSON ({err['ctx']['error']})")
            continue
        where = ".".join(str(p) for p in err["loc"] if p != "body") or "body"
        problems.append(f"{where}: {err['msg']}")
    return "invalid inference request: " + "; ".join(problems)


def parse_version(text: str) -> int:
    """A version in the path is a string in the protocol; here versions are integers."""
    if not re.fullmatch(r"[0-9]{1,9}", text):
        raise BadRequest(f"model version must be a positive integer, got {text!r}")
    return int(text)


def tensor_metadata(name: str, onnx_type: str, shape: Sequence[int | str | None]) -> MetadataTensor:
    dims = [d if isinstance(d, int) and d >= 0 else -1 for d in shape]  # symbolic dims: -1
    return MetadataTensor(name=name, datatype=DATATYPES.get(onnx_type, onnx_type), shape=dims)


def model_input(model: LoadedModel) -> MetadataTensor:
    """The input the manifest names, typed by the graph, shaped as its modality says requests
    send it (the graph and the manifest are checked against each other at load)."""
    name = model.manifest.input.name
    node = next(i for i in model.session.get_inputs() if i.name == name)
    return tensor_metadata(name, node.type, model.input.tensor_shape())


def model_output(model: LoadedModel) -> MetadataTensor:
    """The logits output: the one output LoadedModel.run computes."""
    name = model.manifest.output_name
    node = next(o for o in model.session.get_outputs() if o.name == name)
    return tensor_metadata(name, node.type, node.shape)


def decode_input(
    inputs: list[RequestInput],
    spec: MetadataTensor,
    model_key: str,
    max_batch: int,
    max_id: int | None = None,
) -> NDArray[Any]:
    """The request's one input tensor, checked against the model's input, as a numpy array in
    the model's dtype and shape (N, ...)."""
    names = [i.name for i in inputs]
    if names != [spec.name]:
        raise BadRequest(f"{model_key} takes one input named {spec.name!r}; got {names}")
    tensor = inputs[0]
    dtype = INPUT_DTYPES.get(spec.datatype)
    if dtype is None:
        raise BadRequest(
            f"{model_key} takes {spec.datatype} input; this server reads {sorted(INPUT_DTYPES)}"
        )
    if tensor.datatype != spec.datatype:
        raise BadRequest(
            f"input {spec.name!r} of {model_key} is {spec.datatype}, got {tensor.datatype}"
        )
    shape = tensor.shape
    fits = len(shape) == len(spec.shape) and all(
        want in (-1, got) for want, got in zip(spec.shape, shape, strict=True)
    )
    if not fits or any(d < 1 for d in shape):
        raise BadRequest(
            f"input {spec.name!r} of {model_key} has shape {spec.shape} (-1: any size of at "
            f"least 1; the first axis is the batch); got {shape}"
        )
    if shape[0] > max_batch:
        raise PayloadTooLarge(f"at most {max_batch} items per request; got a batch of {shape[0]}")
    values = tensor_values(tensor.data, spec.datatype, dtype)
    if values.size != math.prod(shape):
        raise BadRequest(
            f"input {spec.name!r} has {values.size} values; shape {shape} needs {math.prod(shape)}"
        )
    if max_id is not None and (values.min() < 0 or values.max() >= max_id):
        raise BadRequest(f"input {spec.name!r} holds token ids, which must be in [0, {max_id})")
    return values.reshape(shape)


def tensor_values(data: list[Any], datatype: str, dtype: type[np.generic]) -> NDArray[Any]:
    """JSON values (flat or nested, row-major) as a flat array, refusing what numpy would
    otherwise convert silently (strings, booleans, fractions for integers, overflow)."""
    what = "integers" if datatype == "INT64" else "numbers"
    refusal = BadRequest(f"{datatype} data must be a flat or evenly nested list of {what}")
    try:
        values = np.asarray(data)
    except ValueError:  # nested lists of unequal lengths
        raise refusal from None
    if values.size == 0:
        return values.astype(dtype).ravel()
    if values.dtype.kind not in JSON_KINDS[datatype]:
        raise refusal
    if values.dtype.kind == "u" and datatype == "INT64" and values.max() > INT64_MAX:
        raise BadRequest("INT64 data must fit in a signed 64-bit integer")
    with np.errstate(over="ignore"):  # too large for FP32 becomes inf, refused just below
        out = values.astype(dtype).ravel()
    if out.dtype.kind == "f" and not np.isfinite(out).all():
        raise BadRequest(f"{datatype} data must be finite and within the type's range")
    return out


def requested_outputs(outputs: list[RequestOutput] | None, spec: MetadataTensor) -> list[str]:
    """The outputs to answer, each once, in the order asked; an unknown name is a 400."""
    if outputs is None:
        return [spec.name]
    unknown = [o.name for o in outputs if o.name != spec.name]
    if unknown:
        raise BadRequest(f"no output named {unknown[0]!r}; the model's outputs are [{spec.name!r}]")
    return list(dict.fromkeys(o.name for o in outputs))


def encode_outputs(
    names: list[str], logits: NDArray[Any], spec: MetadataTensor
) -> list[ResponseOutput]:
    return [
        ResponseOutput(
            name=name,
            datatype=spec.datatype,
            shape=list(logits.shape),
            data=logits.ravel().tolist(),
        )
        for name in names
    ]


def protocol_json(body: BaseModel) -> Response:
    """A ready JSON response without the optional fields left unset (the protocol's `id`)."""
    return Response(body.model_dump_json(exclude_none=True), media_type="application/json")


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ProtocolError, "description": text}
    for status, text in [
        (400, "malformed request: bad JSON, datatype, shape, data, output name or version"),
        (404, "unknown model or version"),
        (413, "request body or batch over the limit"),
        (415, "a body that is not JSON"),
        (422, "not used here: /v2 answers an invalid body with 400"),
        (503, "not ready, or overloaded; retry after the Retry-After seconds"),
    ]
}

# NOTE: strict_content_type=False parses bodies sent without a Content-Type as JSON:
# tritonclient sends none, and the protocol does not ask for one.
router = APIRouter(
    prefix=PREFIX,
    tags=["open inference protocol (v2)"],
    route_class=ProtocolRoute,
    responses=ERRORS,
    strict_content_type=False,
)


@router.get("", response_model=ServerMetadataResponse, summary="Server metadata")
async def server_metadata(request: Request) -> ServerMetadataResponse:
    return ServerMetadataResponse(name="digitserve", version=request.app.version, extensions=[])


@router.get("/health/live", response_model=LiveResponse, summary="Liveness (200 when live)")
async def server_live() -> LiveResponse:
    return LiveResponse(live=True)


@router.get(
    "/health/ready",
    response_model=ServerReadyResponse,
    summary="Readiness: 200 once every model is loaded and warmed, 503 before",
)
async def server_ready(request: Request) -> ServerReadyResponse:
    dataplane_of(request)
    return ServerReadyResponse(ready=True)


def resolve(plane: DataPlane, name: str, version: str | None) -> LoadedModel:
    return plane.resolve(name, None if version is None else parse_version(version))


def model_metadata(plane: DataPlane, model: LoadedModel) -> ModelMetadataResponse:
    versions = sorted(m.version for m in plane.runtime.models if m.name == model.name)
    return ModelMetadataResponse(
        name=model.name,
        versions=[str(v) for v in versions],
        platform=PLATFORM,
        inputs=[model_input(model)],
        outputs=[model_output(model)],
    )


@router.get(
    "/models/{model_name}",
    response_model=ModelMetadataResponse,
    summary="Model metadata (highest loaded version)",
)
async def model_metadata_latest(request: Request, model_name: str) -> ModelMetadataResponse:
    plane = dataplane_of(request)
    return model_metadata(plane, resolve(plane, model_name, None))


@router.get(
    "/models/{model_name}/versions/{model_version}",
    response_model=ModelMetadataResponse,
    summary="Model metadata of one version",
)
async def model_metadata_version(
    request: Request, model_name: str, model_version: str
) -> ModelMetadataResponse:
    plane = dataplane_of(request)
    return model_metadata(plane, resolve(plane, model_name, model_version))


@router.get(
    "/models/{model_name}/ready",
    response_model=ModelReadyResponse,
    summary="Model readiness (highest loaded version)",
)
async def model_ready_latest(request: Request, model_name: str) -> ModelReadyResponse:
    model = resolve(dataplane_of(request), model_name, None)
    return ModelReadyResponse(name=model.name, ready=True)


@router.get(
    "/models/{model_name}/versions/{model_version}/ready",
    response_model=ModelReadyResponse,
    summary="Model readiness of one version",
)
async def model_ready_version(
    request: Request, model_name: str, model_version: str
) -> ModelReadyResponse:
    model = resolve(dataplane_of(request), model_name, model_version)
    return ModelReadyResponse(name=model.name, ready=True)


async def run_inference(
    request: Request, model_name: str, version: str | None, body: InferenceRequest
) -> Response:
    """decode -> batch + infer (the path every endpoint shares) -> encode, counted."""
    plane = dataplane_of(request)
    call = call_of(request, INFER_ENDPOINT)
    number = None if version is None else parse_version(version)

    async def work(model: LoadedModel) -> InferenceResponse:
        in_spec, out_spec = model_input(model), model_output(model)
        names = requested_outputs(body.outputs, out_spec)
        limit = plane.runtime.settings.max_batch_images
        x = decode_input(body.inputs, in_spec, model.key, limit, model.input.value_limit)
        logits = await plane.infer(call, model, x)
        return InferenceResponse(
            model_name=model.name,
            model_version=str(model.version),
            id=body.id,
            outputs=encode_outputs(names, logits, out_spec),
        )

    result = await plane.serve(call, model_name, number, work)
    return protocol_json(result)


@router.post(
    "/models/{model_name}/infer",
    response_model=InferenceResponse,
    response_model_exclude_none=True,
    summary="Inference on the highest loaded version, JSON tensors",
)
async def infer_latest(request: Request, model_name: str, body: InferenceRequest) -> Response:
    return await run_inference(request, model_name, None, body)


@router.post(
    "/models/{model_name}/versions/{model_version}/infer",
    response_model=InferenceResponse,
    response_model_exclude_none=True,
    summary="Inference on one version, JSON tensors",
)
async def infer_version(
    request: Request, model_name: str, model_version: str, body: InferenceRequest
) -> Response:
    return await run_inference(request, model_name, model_version, body)


@router.api_route(
    "/{path:path}",
    methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
    include_in_schema=False,
)
async def no_endpoint(request: Request, path: str) -> Response:
    """Any other /v2 path: 404, or 405 where another method would do, in the protocol's shape.
    NOTE: without this route BentoML answers paths that match no route itself, in plain text."""
    others = (r for r in router.routes if getattr(r, "endpoint", None) is not no_endpoint)
    if any(route.matches(request.scope)[0] == Match.PARTIAL for route in others):
        raise MethodNotAllowed(detail={"method": request.method})
    raise NotFound(f"no endpoint at {request.url.path}")
