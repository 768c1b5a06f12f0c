"""The ways in that `--protocol` picks, and the model a run drives.

http       the API's /predict endpoints with real PNG files (`--weights`), as before.
v2-json    POST /v2/models/{name}/versions/{v}/infer, the tensor as JSON values.
v2-binary  the same with the binary tensor extension: a JSON header
           (Inference-Header-Content-Length) followed by the tensor's raw bytes, the outputs
           asked for as raw bytes too (what tritonclient.http does by default).
grpc       inference.GRPCInferenceService/ModelInfer with raw_input_contents (as
           tritonclient.grpc sends it).

For the tensor protocols the input is the chosen model's preprocessed tensor: its shape and
datatype from the server's model metadata, its values from the same real digits the http
protocol posts (loadtest/images.py) preprocessed as the model's manifest says (GET /models
gives it), `--batch` rows per request. This module prepares that in the CLI's process (a plain
one), writes it where the Locust process reads it, and sends one request of each kind first
so that a bad combination fails with the server's sentence before any load.

numpy, Pillow, modelrepo and grpc are imported where used: the locustfile imports this in
Locust's own image for the http protocol, which has none of them.
"""

from __future__ import annotations

import io
import json
import random
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

PROTOCOLS = ("http", "v2-json", "v2-binary", "grpc")
TENSOR_PROTOCOLS = PROTOCOLS[1:]
DEFAULT_GRPC_PORT = 8001
GRPC_METHOD = "/inference.GRPCInferenceService/ModelInfer"
BINARY_HEADER = "Inference-Header-Content-Length"
# Real digits preprocessed for the tensor protocols: enough for varied bodies, few enough
# that canonicalising them (about 1.5 ms each for mnist-cnn) stays well under a second.
TENSOR_POOL = 256
BATCH_BODIES = 64  # distinct pre-encoded bodies of `batch` rows when batch > 1
MAX_BATCH = 1024  # the client's own bound; the server's limit is the server's to say
DATATYPES = {"FP32": "float32", "INT64": "int64"}
REQUEST_TIMEOUT_S = 30.0
GRPC_MESSAGE_BYTES = 256 * 2**20
GRPC_OPTIONS = [
    ("grpc.max_send_message_length", GRPC_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", GRPC_MESSAGE_BYTES),
]


class TargetError(Exception):
    """The model, protocol or batch cannot be driven: a sentence for the user."""


@dataclass(frozen=True)
class Target:
    """The model version a run drives and how (written to target.json for Locust)."""

    protocol: str
    model: str | None  # None: the server did not say (not a digitserve /models)
    version: str | None
    batch: int = 1  # rows per request (tensor protocols)
    input_name: str = ""
    datatype: str = ""
    row_shape: tuple[int, ...] = ()  # one row's shape, e.g. (1, 28, 28)
    grpc_target: str | None = None
    tensors_path: str | None = None  # .npy of TENSOR_POOL rows

    @property
    def infer_path(self) -> str:
        name = urllib.parse.quote(self.model or "", safe="")
        return f"/v2/models/{name}/versions/{self.version}/infer"

    @property
    def stats_name(self) -> str:
        """The name of this target's requests in Locust's statistics."""
        return GRPC_METHOD if self.protocol == "grpc" else self.infer_path

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Target:
        data = json.loads(text)
        data["row_shape"] = tuple(data["row_shape"])
        return cls(**data)


def default_grpc_target(host: str) -> str:
    """--host's address with the service's default gRPC port."""
    hostname = urllib.parse.urlsplit(host).hostname or "127.0.0.1"
    if ":" in hostname:  # IPv6
        hostname = f"[{hostname}]"
    return f"{hostname}:{DEFAULT_GRPC_PORT}"


# Talking to the server (a plain process: urllib, no proxies).


def _opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _error_text(body: bytes) -> str:
    """The sentence in an error body: {"error": ...} (V2), {"detail": ...} (the API), or text."""
    try:
        data = json.loads(body)
    except ValueError:
        return body.decode("utf-8", errors="replace").strip()[:300]
    if isinstance(data, dict):
        for key in ("error", "detail", "message"):
            value = data.get(key)
            if isinstance(value, str):
                return value
            if isinstance(value, dict) and isinstance(value.get("message"), str):
                return str(value["message"])
    return json.dumps(data)[:300]


def http_call(
    host: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout_s: float = REQUEST_TIMEOUT_S,
) -> tuple[int, dict[str, str], bytes]:
    """GET (or POST with a body) host+path: (status, headers, body); TargetError when the
    server cannot be reached."""
    url = f"{host.rstrip('/')}{path}"
    request = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with _opener().open(request, timeout=timeout_s) as response:
            return response.status, dict(response.headers.items()), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers.items()), error.read()
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise TargetError(f"{'POST' if body is not None else 'GET'} {url}: {reason}") from None


def _get_json(host: str, path: str) -> dict[str, Any]:
    status, _, body = http_call(host, path)
    if status != 200:
        raise TargetError(f"GET {path} answered {status}: {_error_text(body)}")
    try:
        data = json.loads(body)
    except ValueError:
        raise TargetError(f"GET {path} did not answer JSON") from None
    if not isinstance(data, dict):
        raise TargetError(f"GET {path} did not answer a JSON object")
    return data


def loaded_model(models: dict[str, Any], name: str | None) -> dict[str, Any]:
    """The highest loaded version of `name` (the server's default model when None) in a
    GET /models answer; TargetError naming what is loaded when it is not there."""
    entries = [m for m in models.get("models", []) if isinstance(m, dict)]
    wanted = name or models.get("default_model")
    versions = [m for m in entries if m.get("name") == wanted]
    if not versions:
        loaded = sorted({str(m.get("name")) for m in entries})
        raise TargetError(
            f"model {wanted!r} is not loaded on the server (loaded: {', '.join(loaded) or 'none'})"
        )
    return max(versions, key=lambda m: int(m.get("version", 0)))


def http_target(host: str, model: str | None) -> Target:
    """The model version the http protocol's requests reach: `model` (else the server's
    default) at its highest version, as GET /models says; a target without a model when
    /models does not answer (not this service: the run goes ahead without the server's split).
    TargetError for a model that is not loaded."""
    try:
        models = _get_json(host, "/models")
    except TargetError:
        return Target("http", None, None)
    entry = loaded_model(models, model)
    return Target("http", str(entry["name"]), str(entry["version"]))


# The tensors.


def image_pool(preprocessing: dict[str, Any], count: int = TENSOR_POOL) -> NDArray[np.float32]:
    """The first `count` real digits that preprocess (an image without ink is skipped), as the
    model's (count, C, H, W) float32 input."""
    import numpy as np
    from PIL import Image

    from loadtest.images import load_images
    from modelrepo.canonical import NoInk
    from modelrepo.manifest import ImagePreprocessing
    from modelrepo.preprocess import image_to_pixels, pixels_to_input

    spec = ImagePreprocessing.model_validate(preprocessing)
    pixels = []
    for _, data in load_images():
        with Image.open(io.BytesIO(data)) as image:
            try:
                pixels.append(image_to_pixels(image, spec))
            except NoInk:
                continue
        if len(pixels) == count:
            break
    return pixels_to_input(np.stack(pixels), spec)


def _row_shape(metadata_shape: list[int], pool_shape: tuple[int, ...], what: str) -> None:
    """The model metadata's shape (batch axis first, -1 dynamic) must fit the pool's rows."""
    expected = [int(d) for d in metadata_shape[1:]]
    if len(expected) != len(pool_shape) or any(
        d not in (-1, p) for d, p in zip(expected, pool_shape, strict=True)
    ):
        raise TargetError(
            f"{what}: the model's input shape {metadata_shape} does not fit its manifest's "
            f"preprocessing, which gives rows of {list(pool_shape)}"
        )


def encode_v2_json(rows: NDArray[Any], target: Target) -> bytes:
    """An inference request with the rows as JSON values (row-major, flat)."""
    request = {
        "inputs": [
            {
                "name": target.input_name,
                "shape": list(rows.shape),
                "datatype": target.datatype,
                "data": rows.ravel().tolist(),
            }
        ]
    }
    return json.dumps(request, separators=(",", ":")).encode()


def encode_v2_binary(rows: NDArray[Any], target: Target) -> tuple[bytes, int]:
    """A binary-extension request: (the body, the JSON header's length). The outputs are asked
    for as raw bytes, as tritonclient.http's defaults do."""
    data = rows.tobytes()  # C order, little-endian on every platform this runs on
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": target.input_name,
                    "shape": list(rows.shape),
                    "datatype": target.datatype,
                    "parameters": {"binary_data_size": len(data)},
                }
            ],
            "parameters": {"binary_data_output": True},
        },
        separators=(",", ":"),
    ).encode()
    return header + data, len(header)


def encode_grpc(rows: NDArray[Any], target: Target) -> bytes:
    """A serialized ModelInferRequest with the rows as raw_input_contents."""
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(
        model_name=target.model or "", model_version=target.version or ""
    )
    tensor = request.inputs.add()
    tensor.name = target.input_name
    tensor.datatype = target.datatype
    tensor.shape.extend(rows.shape)
    request.raw_input_contents.append(rows.tobytes())
    data: bytes = request.SerializeToString()
    return data


@dataclass(frozen=True)
class Body:
    """One pre-encoded request: its bytes and the HTTP headers it needs (none for gRPC)."""

    data: bytes
    headers: dict[str, str]


def encode(rows: NDArray[Any], target: Target) -> Body:
    if target.protocol == "v2-json":
        return Body(encode_v2_json(rows, target), {"Content-Type": "application/json"})
    if target.protocol == "v2-binary":
        data, header_length = encode_v2_binary(rows, target)
        headers = {"Content-Type": "application/octet-stream", BINARY_HEADER: str(header_length)}
        return Body(data, headers)
    if target.protocol == "grpc":
        return Body(encode_grpc(rows, target), {})
    raise ValueError(f"protocol {target.protocol!r} sends no tensors")


def bodies(pool: NDArray[Any], target: Target, count: int = BATCH_BODIES) -> list[Body]:
    """Requests of `target.batch` rows each: one per pool row at batch 1, else `count` random
    draws of rows (seeded: every run sends the same bodies)."""
    if target.batch == 1:
        return [encode(pool[i : i + 1], target) for i in range(len(pool))]
    rng = random.Random(0)
    out = []
    for _ in range(count):
        picks = (
            rng.sample(range(len(pool)), target.batch)
            if target.batch <= len(pool)
            else rng.choices(range(len(pool)), k=target.batch)
        )
        out.append(encode(pool[sorted(picks)], target))
    return out


def load_pool(target: Target) -> NDArray[Any]:
    import numpy as np

    if target.tensors_path is None:
        raise ValueError("the target has no tensors")
    pool: NDArray[Any] = np.load(target.tensors_path)
    return pool


# gRPC.


def grpc_sentence(error: Any, grpc_target: str) -> str:
    """A grpc.RpcError as a sentence: the server's details and the status code's name."""
    code = error.code() if callable(getattr(error, "code", None)) else None
    name = getattr(code, "name", str(code))
    details = error.details() if callable(getattr(error, "details", None)) else str(error)
    if name == "UNAVAILABLE":
        return (
            f"no gRPC server answers at {grpc_target} ({details}); start the service with "
            "--grpc-port N (or DIGITSERVE_GRPC_PORT) and pass --grpc-target HOST:N"
        )
    return f"gRPC {grpc_target}: {details} ({name})"


def _grpc_modules() -> tuple[Any, Any, Any]:
    try:
        import grpc
        from tritonclient.grpc import service_pb2, service_pb2_grpc
    except (ImportError, RuntimeError):
        raise TargetError(
            "--protocol grpc needs grpcio and tritonclient's gRPC stubs "
            "(pip install 'tritonclient[grpc]')"
        ) from None
    return grpc, service_pb2, service_pb2_grpc


def _grpc_metadata(grpc_target: str, model: str, version: str) -> dict[str, Any]:
    """ServerReady, then ModelMetadata over gRPC, as {inputs: [{name, datatype, shape}]}."""
    grpc, service_pb2, service_pb2_grpc = _grpc_modules()
    with grpc.insecure_channel(grpc_target, options=GRPC_OPTIONS) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        try:
            ready = stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=REQUEST_TIMEOUT_S)
            if not ready.ready:
                raise TargetError(f"gRPC {grpc_target}: the server is not ready")
            answer = stub.ModelMetadata(
                service_pb2.ModelMetadataRequest(name=model, version=version),
                timeout=REQUEST_TIMEOUT_S,
            )
        except grpc.RpcError as error:
            raise TargetError(grpc_sentence(error, grpc_target)) from None
    return {
        "inputs": [
            {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in answer.inputs
        ]
    }


def grpc_infer(grpc_target: str, body: Body) -> Any:
    """One ModelInfer with a serialized request: the ModelInferResponse; TargetError with the
    server's sentence when it is refused."""
    grpc, service_pb2, _ = _grpc_modules()
    with grpc.insecure_channel(grpc_target, options=GRPC_OPTIONS) as channel:
        call = channel.unary_unary(
            GRPC_METHOD,
            request_serializer=None,  # the bytes are a serialized ModelInferRequest already
            response_deserializer=service_pb2.ModelInferResponse.FromString,
        )
        try:
            return call(body.data, timeout=REQUEST_TIMEOUT_S)
        except grpc.RpcError as error:
            raise TargetError(grpc_sentence(error, grpc_target)) from None


# Preparing a run.


def check_rest_answer(status: int, headers: dict[str, str], data: bytes, target: Target) -> None:
    """One V2 answer: 200 with outputs of `target.batch` rows, else TargetError with the
    server's sentence."""
    where = f"POST {target.infer_path}"
    if status != 200:
        raise TargetError(f"{where} answered {status}: {_error_text(data)}")
    lowered = {k.lower(): v for k, v in headers.items()}
    length = lowered.get(BINARY_HEADER.lower())
    try:
        answer = json.loads(data[: int(length)] if length else data)
        outputs = answer["outputs"]
        rows = int(outputs[0]["shape"][0])
    except (ValueError, KeyError, IndexError, TypeError):
        raise TargetError(f"{where} answered something else than outputs: {data[:200]!r}") from None
    if rows != target.batch:
        raise TargetError(f"{where} answered {rows} rows for {target.batch}")
    if target.protocol == "v2-binary" and not length:
        raise TargetError(f"{where} answered JSON, not the binary outputs asked for")


def prepare_tensor_target(
    host: str,
    protocol: str,
    *,
    model: str | None,
    batch: int,
    out_dir: Path,
    grpc_target: str | None = None,
) -> Target:
    """Resolve the model version, build its tensors from the real digits, write them to
    out_dir/tensors.npy, and send one request the way the run will (outside its counts).
    TargetError, with what the server said, when any of it fails."""
    import numpy as np

    if protocol not in TENSOR_PROTOCOLS:
        raise ValueError(f"protocol {protocol!r} sends no tensors")
    if not 1 <= batch <= MAX_BATCH:
        raise TargetError(f"--batch must be in 1..{MAX_BATCH}, got {batch}")
    entry = loaded_model(_get_json(host, "/models"), model)
    name, version = str(entry["name"]), str(entry["version"])
    preprocessing = entry.get("preprocessing") or {}
    if preprocessing.get("kind") != "image":
        raise TargetError(
            f"model {name!r} is a {entry.get('task', preprocessing.get('kind', 'non-image'))} "
            "model (INT64 token ids): --protocol "
            f"{protocol} drives image models only; load it with --protocol http instead"
        )
    if protocol == "grpc":
        grpc_target = grpc_target or default_grpc_target(host)
        metadata = _grpc_metadata(grpc_target, name, version)
    else:
        path = f"/v2/models/{urllib.parse.quote(name, safe='')}/versions/{version}"
        metadata = _get_json(host, path)
    inputs = metadata.get("inputs") or []
    if len(inputs) != 1:
        raise TargetError(f"model {name!r} has {len(inputs)} inputs; the load test sends one")
    spec = inputs[0]
    if spec.get("datatype") != "FP32":
        raise TargetError(
            f"model {name!r} takes {spec.get('datatype')} input; image models take FP32"
        )
    pool = image_pool(preprocessing)
    _row_shape(list(spec.get("shape", [])), tuple(pool.shape[1:]), f"model {name!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors_path = (out_dir / "tensors.npy").resolve()
    np.save(tensors_path, pool)
    target = Target(
        protocol=protocol,
        model=name,
        version=version,
        batch=batch,
        input_name=str(spec["name"]),
        datatype="FP32",
        row_shape=tuple(int(d) for d in pool.shape[1:]),
        grpc_target=grpc_target if protocol == "grpc" else None,
        tensors_path=str(tensors_path),
    )
    body = encode(np.resize(pool, (batch, *pool.shape[1:])), target)
    if protocol == "grpc":
        assert target.grpc_target is not None
        answer = grpc_infer(target.grpc_target, body)
        if not answer.outputs or int(answer.outputs[0].shape[0]) != batch:
            raise TargetError(f"gRPC ModelInfer answered no outputs of {batch} rows")
    else:
        status, headers, data = http_call(host, target.infer_path, body.data, body.headers)
        check_rest_answer(status, headers, data, target)
    return target
