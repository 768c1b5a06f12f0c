"""The binary tensor extension's framing (service/http/binary_tensors.py): where the JSON header
ends, each input's byte count, the cut of the bytes after the header, which outputs go as raw
bytes, and the framed answer. Every refusal is a 400 that says what was wrong."""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.core.errors import BadRequest
from service.http import binary_tensors as binary


@pytest.mark.parametrize(
    ("value", "body_bytes", "length"),
    [
        ("12", 20, 12),
        ("12", 12, 12),  # nothing after the header: no binary inputs
        ("0012", 20, 12),
        ("1", 1, 1),
        ("999999999999", 10**12, 10**12 - 1),  # twelve digits: the longest taken
    ],
)
def test_header_length(value: str, body_bytes: int, length: int) -> None:
    assert binary.header_length(value, body_bytes) == length


@pytest.mark.parametrize(
    "value",
    ["", " ", "-1", "+1", "1.0", "1e3", "0x10", "1_0", "1 0", "١٢", "²", "NaN", "1" * 13, "12a"],
)
def test_header_length_must_be_a_byte_count(value: str) -> None:
    with pytest.raises(BadRequest, match="must be a byte count") as refused:
        binary.header_length(value, 10**15)
    assert refused.value.status == 400
    assert repr(value) in refused.value.message


def test_header_length_within_the_body_and_not_zero() -> None:
    with pytest.raises(BadRequest, match="is 13 but the body has 12 bytes"):
        binary.header_length("13", 12)
    with pytest.raises(BadRequest, match="is 0: the JSON header is missing"):
        binary.header_length("0", 12)
    with pytest.raises(BadRequest, match="is 0"):
        binary.header_length("000", 0)  # an empty body: still no JSON


@pytest.mark.parametrize(
    ("parameters", "size"),
    [
        (None, None),
        ({}, None),
        ({"other": 5}, None),
        ({"binary_data_size": 0}, 0),
        ({"binary_data_size": 256, "other": "x"}, 256),
        ({"binary_data_size": 2**70}, 2**70),  # too many is split_inputs' to judge
    ],
)
def test_binary_size(parameters: dict[str, Any] | None, size: int | None) -> None:
    assert binary.binary_size(parameters, "input 'input'") == size


@pytest.mark.parametrize("size", [True, False, -1, 1.5, 256.0, "256", None, [256], {"n": 1}])
def test_binary_size_must_be_a_non_negative_integer(size: Any) -> None:
    with pytest.raises(BadRequest) as refused:
        binary.binary_size({"binary_data_size": size}, "input 'x'")
    assert refused.value.message == (
        f"input 'x': binary_data_size must be a non-negative integer, got {size!r}"
    )


def test_split_inputs_cuts_in_order_without_copying() -> None:
    blob = memoryview(bytearray(b"abcde"))
    parts = binary.split_inputs([None, 3, None, 2, 0], blob)
    assert [None if p is None else bytes(p) for p in parts] == [None, b"abc", None, b"de", b""]
    first = parts[1]
    assert isinstance(first, memoryview)
    blob[0] = ord("z")  # a view of the request's bytes
    assert bytes(first) == b"zbc"
    assert binary.split_inputs([], memoryview(b"")) == []
    assert binary.split_inputs([None, None], memoryview(b"")) == [None, None]


@pytest.mark.parametrize(
    ("sizes", "blob", "declared"),
    [([3], b"abcd", 3), ([5], b"abcd", 5), ([None], b"x", 0), ([1, 1], b"abc", 2), ([0], b"a", 0)],
)
def test_split_inputs_must_add_up_to_the_bytes(
    sizes: list[int | None], blob: bytes, declared: int
) -> None:
    with pytest.raises(BadRequest) as refused:
        binary.split_inputs(sizes, memoryview(blob))
    assert refused.value.message == (
        f"the inputs' binary_data_size add up to {declared} bytes, but {len(blob)} bytes "
        "follow the JSON header"
    )


@pytest.mark.parametrize(
    ("output", "request_parameters", "wanted"),
    [
        (None, None, False),  # JSON unless asked
        ({}, {}, False),
        ({"other": 1}, None, False),
        ({"binary_data": True}, None, True),
        (None, {"binary_data_output": True}, True),  # tritonclient naming no outputs
        ({"other": 1}, {"binary_data_output": True}, True),
        ({"binary_data": False}, {"binary_data_output": True}, False),  # the output's own wins
        ({"binary_data": True}, {"binary_data_output": False}, True),
        (None, {"binary_data_output": False}, False),
    ],
)
def test_wants_binary(
    output: dict[str, Any] | None, request_parameters: dict[str, Any] | None, wanted: bool
) -> None:
    assert binary.wants_binary(output, request_parameters) is wanted


@pytest.mark.parametrize("value", [1, 0, "true", None, [True]])
def test_wants_binary_takes_only_booleans(value: Any) -> None:
    with pytest.raises(BadRequest) as refused:
        binary.wants_binary({"binary_data": value}, {"binary_data_output": True})
    assert refused.value.message == f"binary_data must be true or false, got {value!r}"
    with pytest.raises(BadRequest, match="binary_data_output must be true or false"):
        binary.wants_binary(None, {"binary_data_output": value})


def test_frame() -> None:
    header = json.dumps({"outputs": [{"name": "logits"}]}).encode()
    body, headers = binary.frame(header, [b"\x01\x02", b"", b"\x03"])
    assert body == header + b"\x01\x02\x03"
    assert headers == {"Inference-Header-Content-Length": str(len(header))}
    # What frame writes, header_length and split_inputs read back.
    length = binary.header_length(headers["Inference-Header-Content-Length"], len(body))
    assert json.loads(body[:length]) == {"outputs": [{"name": "logits"}]}
    parts = binary.split_inputs([2, 0, 1], memoryview(body)[length:])
    assert [bytes(p) for p in parts if p is not None] == [b"\x01\x02", b"", b"\x03"]
    assert binary.frame(b"{}", []) == (b"{}", {"Inference-Header-Content-Length": "2"})


def test_the_header_name_is_matched_lowercase() -> None:
    # Starlette's headers are looked up in lower case; the route checks `HEADER in headers`.
    assert binary.HEADER == "inference-header-content-length" == binary.HEADER.lower()
