"""inference.GRPCInferenceService over the worker's dataplane.

ModelInfer takes the path every way in takes: the admission gate (the request is whole when it
arrives), the API key, the model's bounded queue and batcher, the metrics (endpoint
`grpc:ModelInfer`). Tensors are checked by service/core/tensors.py, as over REST: raw contents
(what tritonclient sends) or the typed contents of the input's datatype; outputs are answered
as raw contents. Errors are gRPC status codes (service/grpc/status.py).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc
import numpy as np
from numpy.typing import NDArray
from tritonclient.grpc import model_config_pb2 as config_pb
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from service.core.dataplane import Call, DataPlane, not_ready
from service.core.errors import ApiError, BadRequest
from service.core.keys import check_key, presented_key
from service.core.models import LoadedModel
from service.core.statistics import model_statistics
from service.core.tensors import (
    INPUT_DTYPES,
    TensorSpec,
    check_input,
    check_output_parameters,
    check_values,
    from_raw,
    input_spec,
    output_spec,
    parse_version,
    raw_bytes,
    requested_outputs,
)
from service.grpc.status import status_of

log = logging.getLogger("digitserve")

ENDPOINT = "grpc:ModelInfer"  # the endpoint label of digitserve_requests_total
PLATFORM = "onnxruntime_onnx"
EXTENSIONS = ["binary_tensor_data", "statistics"]
# The typed contents field of each input datatype read here.
TYPED_CONTENTS = {"FP32": "fp32_contents", "INT64": "int64_contents"}
CONFIG_TYPES = {"FP32": config_pb.TYPE_FP32, "INT64": config_pb.TYPE_INT64}

R = TypeVar("R")


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, plane: DataPlane, server_version: str) -> None:
        self.plane = plane
        self.server_version = server_version
        settings = plane.runtime.settings
        self.api_key = None if settings.api_key is None else settings.api_key.get_secret_value()
        self.max_batch = settings.max_batch_images

    # Health and metadata: open, as over HTTP.

    async def ServerLive(self, request: Any, context: Any) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:
        ready = self.plane.ready and self.plane.runtime.not_ready_reason() is None
        return pb.ServerReadyResponse(ready=ready)

    async def ModelReady(self, request: Any, context: Any) -> Any:
        try:
            self._model(request.name, request.version)
        except ApiError:  # unknown, or still loading: not ready, as Triton answers
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        return pb.ServerMetadataResponse(
            name="digitserve", version=self.server_version, extensions=EXTENSIONS
        )

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        return await self._answer(context, lambda: self._metadata(request))

    async def ModelConfig(self, request: Any, context: Any) -> Any:
        return await self._answer(context, lambda: self._config(request))

    async def ModelStatistics(self, request: Any, context: Any) -> Any:
        return await self._answer(context, lambda: self._statistics(request))

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        arrived = time.perf_counter()  # the whole message is here: its budget starts now
        try:
            return await self._infer(request, context, arrived)
        except ApiError as exc:
            await self._abort(context, exc)

    # The rest.

    async def _answer(self, context: Any, make: Callable[[], R]) -> R:
        try:
            return make()
        except ApiError as exc:
            await self._abort(context, exc)

    async def _abort(self, context: Any, exc: ApiError) -> NoReturn:
        code, trailing = status_of(exc)
        await context.abort(code, exc.message, trailing_metadata=trailing)
        raise AssertionError("context.abort returns only by raising")  # pragma: no cover

    def _ready_plane(self) -> DataPlane:
        if not self.plane.ready:
            raise not_ready()
        return self.plane

    def _model(self, name: str, version: str) -> LoadedModel:
        number = parse_version(version) if version else None
        return self._ready_plane().resolve(name, number)

    def _metadata(self, request: Any) -> Any:
        model = self._model(request.name, request.version)
        versions = sorted(m.version for m in self.plane.runtime.models if m.name == model.name)

        def tensor(spec: TensorSpec) -> Any:
            return pb.ModelMetadataResponse.TensorMetadata(
                name=spec.name, datatype=spec.datatype, shape=list(spec.shape)
            )

        return pb.ModelMetadataResponse(
            name=model.name,
            versions=[str(v) for v in versions],
            platform=PLATFORM,
            inputs=[tensor(input_spec(model))],
            outputs=[tensor(output_spec(model))],
        )

    def _config(self, request: Any) -> Any:
        """The little of Triton's model configuration that is true here (perf_analyzer and
        some clients ask for it): the tensors without the batch axis, and the batch limit."""
        model = self._model(request.name, request.version)
        spec_in, spec_out = input_spec(model), output_spec(model)
        return pb.ModelConfigResponse(
            config=config_pb.ModelConfig(
                name=model.name,
                platform=PLATFORM,
                max_batch_size=self.max_batch,
                input=[
                    config_pb.ModelInput(
                        name=spec_in.name,
                        data_type=CONFIG_TYPES.get(spec_in.datatype, config_pb.TYPE_INVALID),
                        dims=list(spec_in.shape[1:]),
                    )
                ],
                output=[
                    config_pb.ModelOutput(
                        name=spec_out.name,
                        data_type=CONFIG_TYPES.get(spec_out.datatype, config_pb.TYPE_INVALID),
                        dims=list(spec_out.shape[1:]),
                    )
                ],
            )
        )

    def _statistics(self, request: Any) -> Any:
        plane = self._ready_plane()
        if not request.name:
            models = list(plane.runtime.models)
        elif request.version:
            models = [self._model(request.name, request.version)]
        else:
            latest = self._model(request.name, "")
            models = [m for m in plane.runtime.models if m.name == latest.name]
        entries = []
        for stats in model_statistics(plane.runtime.metrics, models):
            durations = {
                stage: pb.StatisticDuration(count=d.count, ns=d.ns)
                for stage, d in stats.stages.items()
            }
            entries.append(
                pb.ModelStatistics(
                    name=stats.name,
                    version=stats.version,
                    last_inference=stats.last_inference_ms,
                    inference_count=stats.inference_count,
                    execution_count=stats.execution_count,
                    inference_stats=pb.InferStatistics(
                        success=pb.StatisticDuration(
                            count=stats.success.count, ns=stats.success.ns
                        ),
                        fail=pb.StatisticDuration(count=stats.fail.count, ns=stats.fail.ns),
                        **durations,
                    ),
                )
            )
        return pb.ModelStatisticsResponse(model_stats=entries)

    async def _infer(self, request: Any, context: Any, arrived: float) -> Any:
        plane = self._ready_plane()
        if self.api_key is not None:
            check_key(metadata_key(context), self.api_key, "ModelInfer")
        call = Call(ENDPOINT, arrived)
        try:
            call.ticket = plane.enter(arrived)
        except ApiError as exc:
            plane.count_unresolved(ENDPOINT, exc)
            raise
        try:
            number = parse_version(request.model_version) if request.model_version else None
            work = self._work(request, call)
            return await plane.serve(call, request.model_name, number, work)
        finally:
            plane.leave(call.ticket)

    def _work(self, request: Any, call: Call) -> Callable[[LoadedModel], Awaitable[Any]]:
        plane = self.plane

        async def work(model: LoadedModel) -> Any:
            started = time.perf_counter()
            spec_in, spec_out = input_spec(model), output_spec(model)
            names = requested_outputs([o.name for o in request.outputs] or None, spec_out)
            for output in request.outputs:
                check_output_parameters(output.parameters)
            x = self._decode(request, spec_in, model)
            call.stages.compute_input += time.perf_counter() - started
            logits = await plane.infer(call, model, x)
            started = time.perf_counter()
            data = raw_bytes(logits)
            response = pb.ModelInferResponse(
                model_name=model.name,
                model_version=str(model.version),
                id=request.id,
                outputs=[
                    pb.ModelInferResponse.InferOutputTensor(
                        name=name, datatype=spec_out.datatype, shape=list(logits.shape)
                    )
                    for name in names
                ],
                raw_output_contents=[data for _ in names],
            )
            call.stages.output_since(started)
            return response

        return work

    def _decode(self, request: Any, spec: TensorSpec, model: LoadedModel) -> NDArray[Any]:
        """The one input, judged by its header first, from raw or typed contents."""
        inputs = request.inputs
        if not inputs:
            raise BadRequest(f"{model.key} takes one input named {spec.name!r}; got none")
        tensor = inputs[0]
        shape = list(tensor.shape)
        check_input(
            [i.name for i in inputs], tensor.datatype, shape, spec, model.key, self.max_batch
        )
        max_id = model.input.value_limit
        raw = request.raw_input_contents
        if raw:
            if len(raw) != len(inputs):
                raise BadRequest(
                    f"raw_input_contents has {len(raw)} entries for {len(inputs)} inputs"
                )
            return from_raw(raw[0], shape, spec, max_id)
        return from_typed(tensor, shape, spec, max_id)


def from_typed(tensor: Any, shape: list[int], spec: TensorSpec, max_id: int | None) -> NDArray[Any]:
    """Typed contents (`fp32_contents`, `int64_contents`): the count is checked before the
    values are copied out of the message."""
    field = TYPED_CONTENTS[spec.datatype]
    values = getattr(tensor.contents, field)
    if len(values) != math.prod(shape):
        others = [f.name for f, v in tensor.contents.ListFields() if f.name != field and v]
        where = f"; {spec.datatype} data goes in {field}, not {others[0]}" if others else ""
        raise BadRequest(
            f"input {spec.name!r} has {len(values)} values in {field}; shape {shape} needs "
            f"{math.prod(shape)}{where}"
        )
    array = np.fromiter(values, dtype=INPUT_DTYPES[spec.datatype], count=len(values))
    return check_values(array, spec, max_id).reshape(shape)


def metadata_key(context: Any) -> bytes | None:
    """The API key in the call's metadata (`authorization: Bearer <key>` or `x-api-key`)."""
    pairs = [
        (key.lower().encode(), value.encode() if isinstance(value, str) else value)
        for key, value in (context.invocation_metadata() or ())
    ]
    return presented_key(pairs)


async def unimplemented(self: Any, request: Any, context: Any) -> NoReturn:
    await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not served here")
    raise AssertionError("context.abort returns only by raising")  # pragma: no cover


# The stubs' other methods (shared memory, repository, tracing, streaming) answer UNIMPLEMENTED
# as coroutines, which grpc.aio needs of every handler.
for _name in dir(pb_grpc.GRPCInferenceServiceServicer):
    if _name[0].isupper() and _name not in vars(InferenceServicer):
        setattr(InferenceServicer, _name, unimplemented)
