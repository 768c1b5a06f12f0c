"""Tensors as the Open Inference Protocol carries them, checked against a model's input before
anything is allocated. One set of rules for every way the protocol comes in: JSON and binary
over REST (service/http/routes/v2.py), raw and typed contents over gRPC (service/grpc/).

A request's input is judged in this order: its name, its datatype, its shape and batch size
(all from the request's header, before any data is read), then its data: the byte size of raw
data must be exactly the shape's, JSON or typed values must be numbers of the datatype's kind,
finite, and token ids within the vocabulary.
"""

from __future__ import annotations

import math
import re
from collections.abc import Container, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from service.core.errors import BadRequest, PayloadTooLarge
from service.core.models import LoadedModel

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
PROTOCOL_DATATYPES = frozenset(DATATYPES.values())
# The datatypes an input may have here, as little-endian numpy types (the protocol's byte
# order for raw data), and the numpy kinds of JSON values each accepts.
INPUT_DTYPES: dict[str, np.dtype[Any]] = {"FP32": np.dtype("<f4"), "INT64": np.dtype("<i8")}
JSON_KINDS = {"FP32": "iuf", "INT64": "iu"}
INT64_MAX = np.iinfo(np.int64).max


def parse_version(text: str) -> int:
    """A version in the path is a string in the protocol; here versions are integers."""
    if not re.fullmatch(r"[0-9]{1,9}", text):
        raise BadRequest(f"model version must be a positive integer, got {text!r}")
    return int(text)


@dataclass(frozen=True)
class TensorSpec:
    """A tensor as the protocol describes it: -1 marks a dynamic axis."""

    name: str
    datatype: str
    shape: tuple[int, ...]


def spec_of(name: str, onnx_type: str, shape: Sequence[int | str | None]) -> TensorSpec:
    dims = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in shape)  # symbolic: -1
    return TensorSpec(name, DATATYPES.get(onnx_type, onnx_type), dims)


def input_spec(model: LoadedModel) -> TensorSpec:
    """The input the manifest names, typed by the graph, shaped as its modality says requests
    send it (the graph and the manifest are checked against each other at load)."""
    name = model.manifest.input.name
    node = next(i for i in model.session.get_inputs() if i.name == name)
    return spec_of(name, node.type, model.input.tensor_shape())


def output_spec(model: LoadedModel) -> TensorSpec:
    """The logits output: the one output LoadedModel.run computes."""
    name = model.manifest.output_name
    node = next(o for o in model.session.get_outputs() if o.name == name)
    return spec_of(name, node.type, node.shape)


def check_input(
    names: Sequence[str],
    datatype: str,
    shape: Sequence[int],
    spec: TensorSpec,
    model_key: str,
    max_batch: int,
) -> None:
    """The request's one input, judged by its header alone: name, datatype, shape, batch."""
    if list(names) != [spec.name]:
        raise BadRequest(f"{model_key} takes one input named {spec.name!r}; got {list(names)}")
    if datatype not in PROTOCOL_DATATYPES:
        raise BadRequest(
            f"unknown datatype {datatype!r}; the protocol's are {sorted(PROTOCOL_DATATYPES)}"
        )
    if spec.datatype not in INPUT_DTYPES:
        raise BadRequest(
            f"{model_key} takes {spec.datatype} input; this server reads {sorted(INPUT_DTYPES)}"
        )
    if datatype != spec.datatype:
        raise BadRequest(f"input {spec.name!r} of {model_key} is {spec.datatype}, got {datatype}")
    fits = len(shape) == len(spec.shape) and all(
        want in (-1, got) for want, got in zip(spec.shape, shape, strict=True)
    )
    if not fits or any(d < 1 for d in shape):
        raise BadRequest(
            f"input {spec.name!r} of {model_key} has shape {list(spec.shape)} (-1: any size of "
            f"at least 1; the first axis is the batch); got {list(shape)}"
        )
    if shape[0] > max_batch:
        raise PayloadTooLarge(f"at most {max_batch} items per request; got a batch of {shape[0]}")


def byte_size(spec: TensorSpec, shape: Sequence[int]) -> int:
    """The bytes raw data of `shape` must have (shape checked first: a bounded product)."""
    return math.prod(shape) * INPUT_DTYPES[spec.datatype].itemsize


def from_raw(
    raw: bytes | memoryview, shape: Sequence[int], spec: TensorSpec, max_id: int | None
) -> NDArray[Any]:
    """Raw little-endian bytes (the binary extension, gRPC's raw contents) as the input."""
    want = byte_size(spec, shape)
    if len(raw) != want:
        raise BadRequest(
            f"input {spec.name!r} has {len(raw)} bytes of data; {spec.datatype} of shape "
            f"{list(shape)} is {want} bytes"
        )
    # A view of the request's bytes: the batcher copies it into its batch.
    values = np.frombuffer(raw, dtype=INPUT_DTYPES[spec.datatype])
    return check_values(values, spec, max_id).reshape(shape)


def from_values(
    data: Sequence[Any], shape: Sequence[int], spec: TensorSpec, max_id: int | None
) -> NDArray[Any]:
    """JSON values or gRPC typed contents (flat or nested, row-major) as the input, refusing
    what numpy would otherwise convert silently (strings, booleans, fractions for integers,
    overflow)."""
    datatype = spec.datatype
    what = "integers" if datatype == "INT64" else "numbers"
    refusal = BadRequest(f"{datatype} data must be a flat or evenly nested list of {what}")
    try:
        values = np.asarray(data)
    except ValueError:  # nested lists of unequal lengths
        raise refusal from None
    if values.size and values.dtype.kind not in JSON_KINDS[datatype]:
        raise refusal
    if (
        values.size
        and values.dtype.kind == "u"
        and datatype == "INT64"
        and values.max() > INT64_MAX
    ):
        raise BadRequest("INT64 data must fit in a signed 64-bit integer")
    if values.size != math.prod(shape):
        raise BadRequest(
            f"input {spec.name!r} has {values.size} values; shape {list(shape)} needs "
            f"{math.prod(shape)}"
        )
    with np.errstate(over="ignore"):  # too large for FP32 becomes inf, refused in check_values
        out = values.astype(INPUT_DTYPES[datatype]).ravel()
    return check_values(out, spec, max_id).reshape(shape)


def check_values(values: NDArray[Any], spec: TensorSpec, max_id: int | None) -> NDArray[Any]:
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise BadRequest(f"{spec.datatype} data must be finite and within the type's range")
    if max_id is not None and values.size and (values.min() < 0 or values.max() >= max_id):
        raise BadRequest(f"input {spec.name!r} holds token ids, which must be in [0, {max_id})")
    return values


def requested_outputs(names: Sequence[str] | None, spec: TensorSpec) -> list[str]:
    """The outputs to answer, each once, in the order asked; an unknown name is a 400."""
    if names is None:
        return [spec.name]
    unknown = [n for n in names if n != spec.name]
    if unknown:
        raise BadRequest(f"no output named {unknown[0]!r}; the model's outputs are [{spec.name!r}]")
    return list(dict.fromkeys(names))


def check_output_parameters(parameters: Container[str] | None) -> None:
    """Refuse the output extensions not served here (classification, shared memory)."""
    for unsupported in ("classification", "shared_memory_region"):
        if parameters and unsupported in parameters:
            raise BadRequest(f"output parameter {unsupported!r} is not supported here")


def raw_bytes(values: NDArray[Any]) -> bytes:
    """An output as the protocol's raw data: row-major, little-endian."""
    return np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<")).tobytes()
