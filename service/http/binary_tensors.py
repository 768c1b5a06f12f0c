"""The Open Inference Protocol's binary tensor data extension over REST, as framing only.

A request with an `Inference-Header-Content-Length: N` header carries N bytes of JSON (the
inference request) followed by the raw bytes of the inputs whose parameters give a
`binary_data_size`, in the order of the inputs. An answer with binary outputs is framed the
same way. Everything here is checked against the body that has arrived (its size is already
under the upload limit) before any tensor is built: a header length past the body, sizes that
are not non-negative integers, or sizes that do not add up to the bytes after the header are
400s. What the bytes mean is service/core/tensors.py's to judge.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from service.core.errors import BadRequest

HEADER = "inference-header-content-length"
SIZE = "binary_data_size"


def header_length(value: str, body_bytes: int) -> int:
    """The JSON header's length from the Inference-Header-Content-Length header."""
    if not re.fullmatch(r"[0-9]{1,12}", value.strip()):
        raise BadRequest(f"Inference-Header-Content-Length must be a byte count, got {value!r}")
    length = int(value)
    if length > body_bytes:
        raise BadRequest(
            f"Inference-Header-Content-Length is {length} but the body has {body_bytes} bytes"
        )
    if length == 0:
        raise BadRequest("Inference-Header-Content-Length is 0: the JSON header is missing")
    return length


def binary_size(parameters: Mapping[str, Any] | None, what: str) -> int | None:
    """An input's `binary_data_size`, or None when it sends JSON data."""
    if not parameters or SIZE not in parameters:
        return None
    size = parameters[SIZE]
    if type(size) is not int or size < 0:  # a bool is an int to isinstance
        raise BadRequest(f"{what}: {SIZE} must be a non-negative integer, got {size!r}")
    return size


def split_inputs(sizes: Sequence[int | None], blob: memoryview) -> list[memoryview | None]:
    """The raw bytes of each input (None for one sent as JSON), cut from the bytes after the
    header; they must add up to exactly those bytes."""
    declared = sum(size for size in sizes if size is not None)
    if declared != len(blob):
        raise BadRequest(
            f"the inputs' {SIZE} add up to {declared} bytes, but {len(blob)} bytes follow the "
            "JSON header"
        )
    out: list[memoryview | None] = []
    offset = 0
    for size in sizes:
        if size is None:
            out.append(None)
            continue
        out.append(blob[offset : offset + size])
        offset += size
    return out


def wants_binary(
    output_parameters: Mapping[str, Any] | None, request_parameters: Mapping[str, Any] | None
) -> bool:
    """Whether an output is answered as raw bytes: its own `binary_data`, else the request's
    `binary_data_output` (what tritonclient sets when it names no outputs), else JSON."""
    choices = ((output_parameters, "binary_data"), (request_parameters, "binary_data_output"))
    for parameters, key in choices:
        if parameters and key in parameters:
            value = parameters[key]
            if type(value) is not bool:
                raise BadRequest(f"{key} must be true or false, got {value!r}")
            return value
    return False


def frame(header: bytes, blobs: Sequence[bytes]) -> tuple[bytes, dict[str, str]]:
    """An answer with binary outputs: the JSON header, then the outputs' bytes, and the header
    that says where the JSON ends."""
    return b"".join([header, *blobs]), {
        "Inference-Header-Content-Length": str(len(header)),
    }
