"""The Open Inference Protocol's stages without a server: version parsing, header checks, input
decoding (FP32 images and INT64 token ids, as JSON values and as raw bytes), output selection;
and the answers of an app whose models are not loaded yet."""

import asyncio
from typing import Any

import httpx
import numpy as np
import pytest
from starlette.datastructures import Headers

from service.core.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from service.core.tensors import TensorSpec, parse_version, requested_outputs, spec_of
from service.http.app import create_app
from service.http.routes.v2 import (
    RequestInput,
    check_content_type,
    decode_input,
)

IMAGE = TensorSpec("input", "FP32", (-1, 1, 8, 8))
TOKENS = TensorSpec("ids", "INT64", (-1, 6))
LOGITS = TensorSpec("logits", "FP32", (-1, 10))
ZEROS_REQUEST = {
    "inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [0] * 64}]
}


def one_input(
    spec: TensorSpec, shape: list[int], data: list[Any], datatype: str = ""
) -> list[RequestInput]:
    return [
        RequestInput(name=spec.name, shape=shape, datatype=datatype or spec.datatype, data=data)
    ]


def decode(
    spec: TensorSpec,
    shape: list[int],
    data: list[Any],
    *,
    datatype: str = "",
    max_id: int | None = None,
) -> np.ndarray:
    return decode_input(one_input(spec, shape, data, datatype), [], spec, "m:1", 64, max_id)


def decode_raw(
    spec: TensorSpec, shape: list[int], raw: bytes, *, max_id: int | None = None
) -> np.ndarray:
    sent = [RequestInput(name=spec.name, shape=shape, datatype=spec.datatype)]
    return decode_input(sent, [memoryview(raw)], spec, "m:1", 64, max_id)


def test_fp32_flat_and_nested_give_the_same_array() -> None:
    values = np.arange(128, dtype=np.float32)
    flat = decode(IMAGE, [2, 1, 8, 8], values.tolist())
    nested = decode(IMAGE, [2, 1, 8, 8], values.reshape(2, 1, 8, 8).tolist())
    assert flat.dtype == np.float32 and flat.shape == (2, 1, 8, 8)
    assert np.array_equal(flat, nested) and np.array_equal(flat.ravel(), values)


def test_raw_bytes_give_the_same_array_as_json_values() -> None:
    values = np.arange(128, dtype=np.float32).reshape(2, 1, 8, 8)
    raw = decode_raw(IMAGE, [2, 1, 8, 8], values.astype("<f4").tobytes())
    assert raw.dtype == np.float32 and np.array_equal(
        raw, decode(IMAGE, [2, 1, 8, 8], values.tolist())
    )
    ids = np.array([[5, 6, 7, 0, 0, 0]], dtype="<i8")
    assert np.array_equal(decode_raw(TOKENS, [1, 6], ids.tobytes(), max_id=10), ids)


@pytest.mark.parametrize(
    ("spec", "shape", "raw", "max_id", "message"),
    [
        (IMAGE, [1, 1, 8, 8], b"\0" * 255, None, "255 bytes of data; FP32 of shape .* is 256"),
        (IMAGE, [1, 1, 8, 8], b"\0" * 257, None, "is 256 bytes"),
        (IMAGE, [1, 1, 8, 8], np.full(64, np.nan, "<f4").tobytes(), None, "finite"),
        (TOKENS, [1, 6], np.full(6, 10, "<i8").tobytes(), 10, r"\[0, 10\)"),
        (TOKENS, [1, 6], np.full(6, -1, "<i8").tobytes(), 10, r"\[0, 10\)"),
    ],
)
def test_raw_refusals(
    spec: TensorSpec, shape: list[int], raw: bytes, max_id: int | None, message: str
) -> None:
    with pytest.raises(BadRequest, match=message):
        decode_raw(spec, shape, raw, max_id=max_id)


def test_an_input_needs_data_or_bytes_but_not_both() -> None:
    with pytest.raises(BadRequest, match="neither data nor a binary_data_size"):
        decode_input(
            [RequestInput(name="input", shape=[1, 1, 8, 8], datatype="FP32")], [], IMAGE, "m:1", 64
        )
    both = one_input(IMAGE, [1, 1, 8, 8], [0] * 64)
    with pytest.raises(BadRequest, match="both data and a binary_data_size"):
        decode_input(both, [memoryview(b"\0" * 256)], IMAGE, "m:1", 64)


def test_unknown_datatypes_are_named() -> None:
    with pytest.raises(BadRequest, match="unknown datatype 'FLOAT'"):
        decode(IMAGE, [1, 1, 8, 8], [0] * 64, datatype="FLOAT")


def test_fp32_accepts_json_integers() -> None:
    assert decode(IMAGE, [1, 1, 8, 8], [0] * 64).dtype == np.float32


def test_int64_token_ids() -> None:
    x = decode(TOKENS, [2, 6], [[5, 6, 7, 0, 0, 0], [9, 0, 0, 0, 0, 0]], max_id=10)
    assert x.dtype == np.int64 and x.shape == (2, 6) and x[1, 0] == 9


@pytest.mark.parametrize(
    ("shape", "data", "message"),
    [
        ([1, 6], [1.5] * 6, "integers"),
        ([1, 6], [True] * 6, "integers"),
        ([1, 6], [2**63] * 6, "signed 64-bit"),
        ([1, 6], [2**64] * 6, "integers"),
        ([1, 6], [10] * 6, "[0, 10)"),
        ([1, 6], [-1] * 6, "[0, 10)"),
        ([1, 5], [1] * 5, "has shape"),
        ([1, 6], [1] * 5, "needs 6"),
    ],
)
def test_int64_refusals(shape: list[int], data: list[Any], message: str) -> None:
    with pytest.raises(BadRequest, match=message.replace("[", r"\[").replace(")", r"\)")):
        decode(TOKENS, shape, data, max_id=10)


@pytest.mark.parametrize(
    ("shape", "data", "datatype", "message"),
    [
        ([1, 1, 8, 8], [0] * 64, "INT64", "is FP32, got INT64"),
        ([1, 1, 8, 8], ["0"] * 64, "", "numbers"),
        ([1, 1, 8, 8], [None] * 64, "", "numbers"),
        ([1, 1, 8, 8], [[0.0] * 8] * 7 + [[0.0]], "", "evenly nested"),
        ([1, 1, 8, 8], [float("nan")] * 64, "", "finite"),
        ([1, 1, 8, 8], [1e39] * 64, "", "finite"),
        ([0, 1, 8, 8], [], "", "at least 1"),
        ([-1, 1, 8, 8], [0] * 64, "", "at least 1"),
        ([1, 8, 8], [0] * 64, "", "has shape"),
        ([1, 1, 8, 8], [0] * 65, "", "needs 64"),
    ],
)
def test_fp32_refusals(shape: list[int], data: list[Any], datatype: str, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        decode(IMAGE, shape, data, datatype=datatype)


def test_batch_limit() -> None:
    with pytest.raises(PayloadTooLarge, match="at most 64"):
        decode(IMAGE, [65, 1, 8, 8], [0] * 65 * 64)


def test_one_input_by_the_model_name() -> None:
    twice = one_input(IMAGE, [1, 1, 8, 8], [0] * 64) * 2
    with pytest.raises(BadRequest, match="one input named 'input'"):
        decode_input(twice, [], IMAGE, "m:1", 64)
    renamed = [RequestInput(name="x", shape=[1, 1, 8, 8], datatype="FP32", data=[0] * 64)]
    with pytest.raises(BadRequest, match="one input named 'input'"):
        decode_input(renamed, [], IMAGE, "m:1", 64)


def test_unsupported_model_datatype() -> None:
    spec = TensorSpec("input", "FP16", (-1, 4))
    with pytest.raises(BadRequest, match="reads"):
        decode(spec, [1, 4], [0] * 4)


def test_requested_outputs() -> None:
    assert requested_outputs(None, LOGITS) == ["logits"]
    assert requested_outputs(["logits", "logits"], LOGITS) == ["logits"]
    with pytest.raises(BadRequest, match="no output named 'probs'"):
        requested_outputs(["probs"], LOGITS)


@pytest.mark.parametrize("text", ["1", "12", "007"])
def test_versions(text: str) -> None:
    assert parse_version(text) == int(text)


@pytest.mark.parametrize("text", ["", "v1", "1.0", "-1", "\uff11", "1" * 10])
def test_bad_versions(text: str) -> None:
    with pytest.raises(BadRequest, match="positive integer"):
        parse_version(text)


def test_headers() -> None:
    check_content_type(Headers({}), has_body=True)  # tritonclient sends no Content-Type
    check_content_type(Headers({"content-type": "application/json; charset=utf-8"}), has_body=True)
    check_content_type(Headers({"content-type": "text/plain"}), has_body=False)
    with pytest.raises(UnsupportedMediaType):
        check_content_type(Headers({"content-type": "text/plain"}), has_body=True)


def test_tensor_metadata_maps_types_and_dynamic_dims() -> None:
    meta = spec_of("ids", "tensor(int64)", ["batch", None, 48])
    assert (meta.datatype, meta.shape) == ("INT64", (-1, -1, 48))
    assert spec_of("x", "tensor(float)", [2]).datatype == "FP32"


def test_not_ready_answers_in_the_protocol_shape() -> None:
    async def main() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=create_app())  # no runtime: models still loading
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            return [
                await client.get("/v2/health/live"),
                await client.get("/v2/health/ready"),
                await client.get("/v2/models/digits-cnn/ready"),
                await client.post("/v2/models/digits-cnn/infer", json=ZEROS_REQUEST),
                await client.get("/v2"),
            ]

    live, ready, model_ready, infer, metadata = asyncio.run(main())
    assert (live.status_code, live.json()) == (200, {"live": True})
    for r in (ready, model_ready, infer):
        assert r.status_code == 503 and r.json() == {"error": "not ready: models are still loading"}
        assert r.headers["retry-after"]
    assert metadata.status_code == 200 and metadata.json()["name"] == "digitserve"


def test_errors_elsewhere_keep_the_api_shape() -> None:
    async def main() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            return await client.get("/models")

    r = asyncio.run(main())
    assert r.status_code == 503 and set(r.json()) == {"error", "detail"}
