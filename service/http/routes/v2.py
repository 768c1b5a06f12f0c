"""The Open Inference Protocol (KServe V2, as Triton speaks it) over REST, on the same models,
batchers and metrics as the rest of the API.

Stages of an inference request: check the headers -> parse the JSON body (pydantic), or with
the binary tensor extension the JSON header and the raw tensors after it (service/http/
binary_tensors.py) -> resolve the model -> decode the input tensor against the model's input
(service/core/tensors.py, shared with gRPC) -> batch + infer -> encode the requested outputs, as
JSON or raw bytes. The statistics extension reads the service's metrics (service/core/
statistics.py). Errors on these paths have the protocol's shape, `{"error": "..."}`
(`error_body`, which the layers in front of the routes use too: service/http/surfaces.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import Headers
from starlette.routing import Match

from service.core.dataplane import DataPlane
from service.core.errors import (
    ApiError,
    BadRequest,
    MethodNotAllowed,
    NotFound,
    UnsupportedMediaType,
)
from service.core.models import LoadedModel
from service.core.statistics import model_statistics
from service.core.tensors import (
    TensorSpec,
    check_input,
    check_output_parameters,
    from_raw,
    from_values,
    input_spec,
    output_spec,
    parse_version,
    raw_bytes,
    requested_outputs,
)
from service.http import binary_tensors as binary
from service.http.context import call_of, dataplane_of

PREFIX = "/v2"
PLATFORM = "onnxruntime_onnx"
INFER_ENDPOINT = "/v2/infer"  # the endpoint label of digitserve_requests_total

EXTENSIONS = ["binary_tensor_data", "statistics"]


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
        description="protocol extensions supported", examples=[EXTENSIONS]
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
    parameters: dict[str, Any] | None = Field(
        None,
        description="`binary_data_size`: the tensor's bytes follow the JSON header (binary "
        "tensor extension) instead of `data`; others are accepted and ignored",
    )
    data: list[Any] | None = Field(
        None,
        description="the tensor's values in row-major order, as a flat list or nested lists "
        "(absent when the parameters give a binary_data_size)",
        examples=[[0.0] * 64],
    )


class RequestOutput(_Body):
    name: str = Field(description="an output of the model", examples=["logits"])
    parameters: dict[str, Any] | None = Field(
        None,
        description="`binary_data`: true answers this output as raw bytes after the JSON "
        "header (binary tensor extension); others are accepted and ignored",
    )


class InferenceRequest(_Body):
    id: str | None = Field(None, description="echoed in the response", examples=["42"])
    parameters: dict[str, Any] | None = Field(
        None,
        description="`binary_data_output`: true answers every output not asking otherwise as "
        "raw bytes; others are accepted and ignored",
    )
    inputs: list[RequestInput] = Field(min_length=1, description="the model's one input tensor")
    outputs: list[RequestOutput] | None = Field(
        None, description="outputs to return; default: all of them"
    )


class ResponseOutput(_Body):
    name: str = Field(examples=["logits"])
    datatype: str = Field(examples=["FP32"])
    shape: list[int] = Field(examples=[[1, 10]])
    parameters: dict[str, Any] | None = Field(
        None, description="`binary_data_size` when the output's bytes follow the JSON header"
    )
    data: list[float] | list[int] | None = Field(
        None, description="row-major values (logits, not softmax), unless sent as raw bytes"
    )


class InferenceResponse(_Body):
    model_name: str = Field(examples=["digits-cnn"])
    model_version: str = Field(description="the version that answered", examples=["1"])
    id: str | None = Field(None, description="the request's id, when it gave one")
    outputs: list[ResponseOutput]


class StatisticDuration(_Body):
    count: int = Field(description="how many", examples=[42])
    ns: int = Field(description="their cumulative time in nanoseconds", examples=[84000000])


class InferStatistics(_Body):
    success: StatisticDuration = Field(description="answered requests, arrival to answer")
    fail: StatisticDuration = Field(description="failed requests of this model")
    queue: StatisticDuration = Field(description="waiting for a batch to start")
    compute_input: StatisticDuration = Field(description="decode, validate, preprocess")
    compute_infer: StatisticDuration = Field(description="the onnxruntime calls")
    compute_output: StatisticDuration = Field(description="postprocess and encode")
    cache_hit: StatisticDuration = Field(description="always 0: no response cache")
    cache_miss: StatisticDuration = Field(description="always 0: no response cache")


class ModelStatisticsEntry(_Body):
    name: str = Field(examples=["mnist-cnn"])
    version: str = Field(examples=["2"])
    last_inference: int = Field(description="Unix time in ms of the last inference, 0 if none")
    inference_count: int = Field(description="items inferred (images, texts, tensor rows)")
    execution_count: int = Field(description="onnxruntime calls (batches)")
    inference_stats: InferStatistics
    batch_stats: list[dict[str, Any]] = Field(
        description="per batch size: not kept (digitserve_batch_images has the sizes)",
        examples=[[]],
    )


class StatisticsResponse(_Body):
    model_stats: list[ModelStatisticsEntry]


class ProtocolRoute(APIRoute):
    """Refuses bodies these endpoints cannot read before FastAPI parses them, and answers an
    invalid body with the protocol's 400 instead of the API's 422."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            has_body = self.body_field is not None
            if has_body and binary.HEADER in request.headers:
                # The binary extension: the JSON header is parsed here, not by FastAPI (which
                # would read the whole body as JSON), and the raw tensors wait in the state.
                parsed, request.state.binary = await read_framed(request)
                return await self.endpoint(request=request, body=parsed, **request.path_params)
            check_content_type(request.headers, has_body=has_body)
            try:
                return await handler(request)
            except RequestValidationError as exc:
                raise BadRequest(describe_invalid(exc.errors())) from None

        return handle


def check_content_type(headers: Headers, *, has_body: bool) -> None:
    """Refuse what would otherwise be misread as a malformed JSON body."""
    content_type = headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if has_body and content_type != "application/json" and not content_type.endswith("+json"):
        raise UnsupportedMediaType(
            f"send the inference request as JSON (Content-Type: application/json), or with "
            f"the binary tensor extension's Inference-Header-Content-Length; not {content_type}"
        )


async def read_framed(request: Request) -> tuple[InferenceRequest, memoryview]:
    """A binary-framed body: its JSON header as an inference request, and the bytes after it."""
    body = await request.body()
    given = request.headers.getlist(binary.HEADER)
    if len(given) != 1:  # two lengths would be ambiguous framing, as two Content-Lengths are
        raise BadRequest("send one Inference-Header-Content-Length header, not several")
    length = binary.header_length(given[0], len(body))
    try:
        parsed = InferenceRequest.model_validate_json(body[:length])
    except ValidationError as exc:
        raise BadRequest(describe_invalid(exc.errors())) from None
    return parsed, memoryview(body)[length:]


def describe_invalid(errors: Sequence[Any]) -> str:
    problems = []
    for err in errors:
        if err["type"] == "json_invalid":
            problems.append(f"the body is not valid JSON ({err['ctx']['error']})")
            continue
        where = ".".join(str(p) for p in err["loc"] if p != "body") or "body"
        problems.append(f"{where}: {err['msg']}")
    return "invalid inference request: " + "; ".join(problems)


def metadata(spec: TensorSpec) -> MetadataTensor:
    return MetadataTensor(name=spec.name, datatype=spec.datatype, shape=list(spec.shape))


def decode_input(
    inputs: list[RequestInput],
    raw: Sequence[memoryview | None],
    spec: TensorSpec,
    model_key: str,
    max_batch: int,
    max_id: int | None = None,
) -> NDArray[Any]:
    """The request's one input tensor, checked against the model's input by its header first,
    as a numpy array in the model's dtype and shape (N, ...). `raw` holds each input's bytes
    when the binary extension carried them."""
    names = [i.name for i in inputs]
    tensor = inputs[0]
    check_input(names, tensor.datatype, tensor.shape, spec, model_key, max_batch)
    data = raw[0] if raw else None
    if data is not None:
        if tensor.data is not None:
            raise BadRequest(f"input {spec.name!r} has both data and a binary_data_size")
        return from_raw(data, tensor.shape, spec, max_id)
    if tensor.data is None:
        raise BadRequest(f"input {spec.name!r} has neither data nor a binary_data_size")
    return from_values(tensor.data, tensor.shape, spec, max_id)


def raw_inputs(body: InferenceRequest, blob: memoryview | None) -> list[memoryview | None]:
    """Each input's raw bytes under the binary extension (None where it sent JSON data)."""
    sizes = [binary.binary_size(i.parameters, f"input {i.name!r}") for i in body.inputs]
    if blob is None:
        if any(size is not None for size in sizes):
            raise BadRequest(
                "an input gives a binary_data_size, but the request has no "
                "Inference-Header-Content-Length header to say where its JSON ends"
            )
        return [None] * len(sizes)
    return binary.split_inputs(sizes, blob)


def output_plan(body: InferenceRequest, spec: TensorSpec) -> list[tuple[str, bool]]:
    """The outputs to answer, in order, each with whether it goes as raw bytes; checked before
    anything is inferred."""
    asked = {o.name: o.parameters for o in body.outputs or []}
    names = requested_outputs(None if body.outputs is None else list(asked), spec)
    plan = []
    for name in names:
        parameters = asked.get(name)
        check_output_parameters(parameters)
        plan.append((name, binary.wants_binary(parameters, body.parameters)))
    return plan


def encode_outputs(
    plan: list[tuple[str, bool]], logits: NDArray[Any], spec: TensorSpec
) -> tuple[list[ResponseOutput], list[bytes]]:
    """The outputs as JSON values, or as raw bytes returned in order to follow the header."""
    outputs, blobs = [], []
    for name, as_bytes in plan:
        output = ResponseOutput(name=name, datatype=spec.datatype, shape=list(logits.shape))
        if as_bytes:
            blobs.append(raw_bytes(logits))
            output.parameters = {binary.SIZE: len(blobs[-1])}
        else:
            output.data = logits.ravel().tolist()
        outputs.append(output)
    return outputs, blobs


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
    return ServerMetadataResponse(
        name="digitserve", version=request.app.version, extensions=EXTENSIONS
    )


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


def statistics(plane: DataPlane, models: list[LoadedModel]) -> StatisticsResponse:
    """The statistics extension's answer for `models`, all workers' figures added up."""
    entries = []
    for stats in model_statistics(plane.runtime.metrics, models):
        durations = {stage: StatisticDuration(**vars(d)) for stage, d in stats.stages.items()}
        none = StatisticDuration(count=0, ns=0)
        entries.append(
            ModelStatisticsEntry(
                name=stats.name,
                version=stats.version,
                last_inference=stats.last_inference_ms,
                inference_count=stats.inference_count,
                execution_count=stats.execution_count,
                inference_stats=InferStatistics(
                    success=StatisticDuration(**vars(stats.success)),
                    fail=StatisticDuration(**vars(stats.fail)),
                    **durations,
                    cache_hit=none,
                    cache_miss=none,
                ),
                batch_stats=[],
            )
        )
    return StatisticsResponse(model_stats=entries)


def model_metadata(plane: DataPlane, model: LoadedModel) -> ModelMetadataResponse:
    versions = sorted(m.version for m in plane.runtime.models if m.name == model.name)
    return ModelMetadataResponse(
        name=model.name,
        versions=[str(v) for v in versions],
        platform=PLATFORM,
        inputs=[metadata(input_spec(model))],
        outputs=[metadata(output_spec(model))],
    )


# Before /models/{model_name}: "stats" here is the endpoint, not a model's name (as in Triton).
@router.get(
    "/models/stats",
    response_model=StatisticsResponse,
    summary="Statistics of every loaded model version (statistics extension)",
)
async def statistics_all(request: Request) -> StatisticsResponse:
    plane = dataplane_of(request)
    return statistics(plane, list(plane.runtime.models))


@router.get(
    "/models/{model_name}/stats",
    response_model=StatisticsResponse,
    summary="Statistics of every loaded version of a model",
)
async def statistics_model(request: Request, model_name: str) -> StatisticsResponse:
    plane = dataplane_of(request)
    latest = resolve(plane, model_name, None)  # 404 for an unknown model
    return statistics(plane, [m for m in plane.runtime.models if m.name == latest.name])


@router.get(
    "/models/{model_name}/versions/{model_version}/stats",
    response_model=StatisticsResponse,
    summary="Statistics of one model version",
)
async def statistics_version(
    request: Request, model_name: str, model_version: str
) -> StatisticsResponse:
    plane = dataplane_of(request)
    return statistics(plane, [resolve(plane, model_name, model_version)])


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

    async def work(model: LoadedModel) -> Response:
        started = time.perf_counter()
        raw = raw_inputs(body, getattr(request.state, "binary", None))
        in_spec, out_spec = input_spec(model), output_spec(model)
        plan = output_plan(body, out_spec)
        limit = plane.runtime.settings.max_batch_images
        x = decode_input(body.inputs, raw, in_spec, model.key, limit, model.input.value_limit)
        call.stages.compute_input += time.perf_counter() - started
        logits = await plane.infer(call, model, x)
        started = time.perf_counter()
        outputs, blobs = encode_outputs(plan, logits, out_spec)
        answer = InferenceResponse(
            model_name=model.name, model_version=str(model.version), id=body.id, outputs=outputs
        )
        response = protocol_response(answer, blobs)
        call.stages.output_since(started)
        return response

    return await plane.serve(call, model_name, number, work)


def protocol_response(answer: InferenceResponse, blobs: list[bytes]) -> Response:
    """The answer as JSON, or framed with the raw outputs after it (binary extension)."""
    header = answer.model_dump_json(exclude_none=True).encode()
    if not blobs:
        return Response(header, media_type="application/json")
    body, headers = binary.frame(header, blobs)
    return Response(body, media_type="application/octet-stream", headers=headers)


@router.post(
    "/models/{model_name}/infer",
    response_model=InferenceResponse,
    response_model_exclude_none=True,
    summary="Inference on the highest loaded version (JSON or binary tensors)",
)
async def infer_latest(request: Request, model_name: str, body: InferenceRequest) -> Response:
    return await run_inference(request, model_name, None, body)


@router.post(
    "/models/{model_name}/versions/{model_version}/infer",
    response_model=InferenceResponse,
    response_model_exclude_none=True,
    summary="Inference on one version (JSON or binary tensors)",
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
