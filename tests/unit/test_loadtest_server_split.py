"""The load test's server-side split and its tensor protocols, without Locust or a server:
/metrics parsing and before/after deltas (two /metrics texts captured from a real
`python -m service` with 2 workers, around three /predict requests to mnist-cnn 2, one to
digits-cnn 2 and one to mnist-cnn 1), the summary's server block and text, the V2/gRPC request
bodies, and the CLI's refusals of options that do not go together."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from loadtest.cli import build_parser, format_summary, usage_problem
from loadtest.protocols import (
    BINARY_HEADER,
    Target,
    TargetError,
    bodies,
    check_rest_answer,
    default_grpc_target,
    encode,
    grpc_sentence,
    image_pool,
    loaded_model,
)
from loadtest.runner import Summary, failure_status, summarise, with_server_split
from loadtest.server_stats import (
    MetricsUnavailable,
    Totals,
    format_split,
    parse_metrics,
    scrape,
    server_split,
)
from tests.helpers import free_port

DATA = Path(__file__).resolve().with_name("data")
BEFORE = (DATA / "loadtest_metrics_before.txt").read_text()
AFTER = (DATA / "loadtest_metrics_after.txt").read_text()
STAGES = ("queue", "compute_input", "compute_infer", "compute_output")


def test_parse_metrics_reads_the_two_histograms() -> None:
    totals = parse_metrics(AFTER)
    assert totals.requests[("mnist-cnn", "2", "/predict")] == pytest.approx(
        [6.290333529832424, 757]
    )
    assert totals.stages[("mnist-cnn", "2", "queue")] == pytest.approx([5.872064307477558, 2040])
    assert {key[2] for key in totals.stages} == set(STAGES)
    # Only the _sum and _count samples: buckets and other families are left out.
    assert all(len(value) == 2 for value in [*totals.stages.values(), *totals.requests.values()])
    assert ("digits-cnn", "2", "/predict") in totals.requests
    assert ("digits-cnn", "2", "/predict") not in parse_metrics(BEFORE).requests


def test_parse_metrics_adds_up_series_with_the_same_labels() -> None:
    text = (
        "# TYPE digitserve_stage_seconds histogram\n"
        'digitserve_stage_seconds_sum{model="m",stage="queue",version="1",worker="a"} 0.5\n'
        'digitserve_stage_seconds_count{model="m",stage="queue",version="1",worker="a"} 2.0\n'
        'digitserve_stage_seconds_sum{model="m",stage="queue",version="1",worker="b"} 1.5\n'
        'digitserve_stage_seconds_count{model="m",stage="queue",version="1",worker="b"} 3.0\n'
    )
    assert parse_metrics(text).stages == {("m", "1", "queue"): [2.0, 5.0]}
    assert parse_metrics("") == Totals()


def test_parse_metrics_refuses_what_is_not_prometheus_text() -> None:
    with pytest.raises(MetricsUnavailable, match="not Prometheus text"):
        parse_metrics("<html><body>not metrics</body></html>\n")


def split_of(model: str, version: str, client_mean_ms: float = 20.0) -> dict[str, object]:
    return server_split(
        parse_metrics(BEFORE),
        parse_metrics(AFTER),
        model=model,
        version=version,
        client_p50_ms=18.0,
        client_p99_ms=40.0,
        client_mean_ms=client_mean_ms,
    )


def test_server_split_is_the_delta_for_one_model_version() -> None:
    split = split_of("mnist-cnn", "2")
    assert split["model"] == "mnist-cnn" and split["version"] == "2"
    assert split["requests"] == 3
    assert split["requests_by_endpoint"] == {"/predict": 3}
    assert split["stage_counts"] == dict.fromkeys(STAGES, 3)
    stages = split["stages_ms"]
    assert isinstance(stages, dict)
    assert stages["queue"] == pytest.approx((5.872064307477558 - 5.871343570470344) / 3 * 1000)
    assert stages["compute_input"] == pytest.approx(
        (1.4326926128997002 - 1.3954490518954117) / 3 * 1000
    )
    server_ms = (6.290333529832424 - 6.243434348842129) / 3 * 1000
    assert split["server_latency_ms"] == pytest.approx(server_ms)
    assert split["server_overhead_ms"] == pytest.approx(server_ms - sum(stages.values()))
    assert split["client_latency_ms"] == {"p50": 18.0, "p99": 40.0, "mean": 20.0}
    assert split["unaccounted_ms"] == pytest.approx(20.0 - server_ms)


def test_server_split_counts_a_series_new_since_the_first_scrape() -> None:
    digits = split_of("digits-cnn", "2")
    assert digits["requests"] == 1 and digits["stage_counts"] == dict.fromkeys(STAGES, 1)
    assert digits["server_latency_ms"] == pytest.approx(2.5709990004543215)
    assert split_of("mnist-cnn", "1")["requests"] == 1


def test_server_split_of_a_model_without_requests() -> None:
    split = split_of("text-topics", "1")
    assert split["requests"] == 0 and split["server_latency_ms"] is None
    assert split["stages_ms"] == dict.fromkeys(STAGES, None)
    assert split["unaccounted_ms"] is None and split["server_overhead_ms"] is None


def test_server_split_when_a_worker_restarted() -> None:
    # A series that went down lost a worker's share: count it from zero, never negatively.
    before, after = Totals(), Totals()
    before.requests[("m", "1", "/predict")] = [10.0, 100.0]
    after.requests[("m", "1", "/predict")] = [0.5, 5.0]
    split = server_split(
        before, after, model="m", version="1", client_p50_ms=1, client_p99_ms=2, client_mean_ms=1
    )
    assert split["requests"] == 5 and split["server_latency_ms"] == pytest.approx(100.0)
    # Stages missing for some requests (/explain never reaches a batcher): no overhead figure.
    assert split["stage_counts"] == dict.fromkeys(STAGES, 0)
    assert split["server_overhead_ms"] is None


def test_scrape_of_a_port_nobody_listens_on() -> None:
    with pytest.raises(MetricsUnavailable, match="/metrics"):
        scrape(f"http://127.0.0.1:{free_port()}", timeout_s=2)


SUMMARY = Summary(
    host="http://127.0.0.1:3000",
    users=4,
    duration_s=3.0,
    rate=None,
    requests=3,
    failures=0,
    rps=1.0,
    success_rps=1.0,
    p50_ms=18.0,
    p95_ms=30.0,
    p99_ms=40.0,
    max_ms=41.0,
    failures_by_status={},
    endpoints={
        "/v2/models/mnist-cnn/versions/2/infer": {
            "requests": 3,
            "failures": 0,
            "rps": 1.0,
            "p50_ms": 18.0,
            "p99_ms": 40.0,
        }
    },
    images_per_s=None,
    slo_p99_ms=None,
    slo_met=True,
    protocol="v2-binary",
    batch=32,
    tensors_per_s=32.0,
    mean_ms=20.0,
)
TARGET = Target(
    protocol="v2-binary",
    model="mnist-cnn",
    version="2",
    batch=32,
    input_name="input",
    datatype="FP32",
    row_shape=(1, 28, 28),
    tensors_path="/nowhere/tensors.npy",
)


def test_with_server_split_and_its_text() -> None:
    summary = with_server_split(SUMMARY, TARGET, parse_metrics(BEFORE), parse_metrics(AFTER))
    assert summary.server is not None and summary.server_note is None
    assert summary.server["requests"] == summary.requests == 3
    data = json.loads(summary.to_json())
    assert set(data["server"]) == {
        "model",
        "version",
        "requests",
        "requests_by_endpoint",
        "stage_counts",
        "stages_ms",
        "server_latency_ms",
        "server_overhead_ms",
        "client_latency_ms",
        "unaccounted_ms",
    }
    assert Summary.from_json(summary.to_json()) == summary
    text = format_summary(summary)
    lines = text.splitlines()
    assert len(lines) <= 24 and max(len(line) for line in lines) <= 100, text
    assert "protocol    v2-binary mnist-cnn 2, 32 rows per request" in text
    assert "tensors/s   32.0" in text
    assert "  Server: queue 240 us, compute input 12,415 us, compute infer 1,148 us" in text
    assert "  Client: avg 20,000 us (p50 18,000 us, p99 40,000 us); network+server overhead" in text


def test_with_server_split_notes_what_does_not_add_up() -> None:
    more = replace(SUMMARY, requests=5)
    noted = with_server_split(more, TARGET, parse_metrics(BEFORE), parse_metrics(AFTER))
    assert noted.server is not None and noted.server["requests"] == 3
    assert noted.server_note is not None and "answered 3 requests" in noted.server_note
    other = replace(TARGET, model="text-topics", version="1")
    none = with_server_split(SUMMARY, other, parse_metrics(BEFORE), parse_metrics(AFTER))
    assert none.server is None and none.server_note is not None
    assert "no server-side split" in format_summary(none)


def test_format_split_without_figures() -> None:
    split = split_of("text-topics", "1")
    assert "queue n/a" in "\n".join(format_split(split))


def test_older_summary_json_still_reads() -> None:
    data = json.loads(SUMMARY.to_json())
    for added in ("protocol", "batch", "tensors_per_s", "mean_ms", "server", "server_note"):
        del data[added]
    old = Summary.from_json(json.dumps(data))
    assert old.protocol == "http" and old.server is None and old.tensors_per_s is None


def write_stats(out: Path) -> None:
    header = (
        "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,"
        "Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,"
        "50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%"
    )
    row = "50,0,7,7.5,1,30,245,25.0,0.0,7,8,9,10,12,15,20,25,30,30,30"
    (out / "locust_stats.csv").write_text(
        f"{header}\ngrpc,/inference.GRPCInferenceService/ModelInfer,{row}\n,Aggregated,{row}\n"
    )


def test_summarise_tensor_protocol(tmp_path: Path) -> None:
    write_stats(tmp_path)
    target = replace(TARGET, protocol="grpc", batch=8)
    summary = summarise(
        tmp_path,
        host="h",
        users=1,
        duration_s=2,
        rate=None,
        batch_size=32,
        slo_p99_ms=None,
        target=target,
    )
    assert summary.protocol == "grpc" and summary.batch == 8
    assert summary.tensors_per_s == pytest.approx(25.0 * 8) and summary.mean_ms == 7.5
    assert summary.images_per_s is None
    http = summarise(
        tmp_path, host="h", users=1, duration_s=2, rate=None, batch_size=32, slo_p99_ms=None
    )
    assert http.protocol == "http" and http.batch is None and http.tensors_per_s is None


@pytest.mark.parametrize(
    ("error", "status"),
    [
        ("GrpcStatusError('grpc UNAVAILABLE: failed to connect to all addresses')", "UNAVAILABLE"),
        (
            "GrpcStatusError('grpc RESOURCE_EXHAUSTED: overloaded, status 503')",
            "RESOURCE_EXHAUSTED",
        ),
        ("GrpcStatusError(\"grpc NOT_FOUND: model 'x' is not loaded\")", "NOT_FOUND"),
    ],
)
def test_failure_status_of_grpc(error: str, status: str) -> None:
    assert failure_status(error) == status


MODELS = {
    "default_model": "mnist-cnn",
    "models": [
        {"name": "mnist-cnn", "version": 1, "task": "image-classification"},
        {"name": "mnist-cnn", "version": 2, "task": "image-classification"},
        {"name": "text-topics", "version": 1, "task": "text-classification"},
    ],
}


def test_loaded_model() -> None:
    assert loaded_model(MODELS, None)["version"] == 2
    assert loaded_model(MODELS, "text-topics")["name"] == "text-topics"
    with pytest.raises(TargetError, match=r"'nope' is not loaded .*loaded: mnist-cnn, text-topics"):
        loaded_model(MODELS, "nope")


def test_image_pool_is_the_real_digits_preprocessed() -> None:
    preprocessing = {
        "kind": "image",
        "color": "L",
        "size": [8, 8],
        "scale": 1 / 255,
        "mean": [0.3],
        "std": [0.4],
    }
    pool = image_pool(preprocessing, count=16)
    assert pool.shape == (16, 1, 8, 8) and pool.dtype == np.float32
    assert pool.std() > 0.1  # real images, not a constant


def test_request_bodies() -> None:
    pool = np.arange(4 * 1 * 2 * 2, dtype=np.float32).reshape(4, 1, 2, 2)
    target = replace(TARGET, protocol="v2-json", batch=1, row_shape=(1, 2, 2))
    one = encode(pool[:1], target)
    request = json.loads(one.data)
    assert request["inputs"] == [
        {"name": "input", "shape": [1, 1, 2, 2], "datatype": "FP32", "data": [0.0, 1.0, 2.0, 3.0]}
    ]
    assert len(bodies(pool, target)) == 4
    binary = encode(pool[1:3], replace(target, protocol="v2-binary", batch=2))
    length = int(binary.headers[BINARY_HEADER])
    header = json.loads(binary.data[:length])
    assert header["inputs"][0]["parameters"] == {"binary_data_size": 2 * 4 * 4}
    assert header["inputs"][0]["shape"] == [2, 1, 2, 2]
    assert header["parameters"] == {"binary_data_output": True}
    assert binary.data[length:] == pool[1:3].tobytes()
    batches = bodies(pool, replace(target, batch=3), count=5)
    assert len(batches) == 5
    assert all(json.loads(b.data)["inputs"][0]["shape"][0] == 3 for b in batches)
    # More rows than the pool holds: drawn with repeats.
    assert json.loads(bodies(pool, replace(target, batch=9), count=1)[0].data)["inputs"][0][
        "shape"
    ] == [9, 1, 2, 2]


def test_grpc_request_body() -> None:
    service_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2")
    pool = np.ones((2, 1, 2, 2), dtype=np.float32)
    body = encode(pool, replace(TARGET, protocol="grpc", batch=2))
    request = service_pb2.ModelInferRequest.FromString(body.data)
    assert (request.model_name, request.model_version) == ("mnist-cnn", "2")
    assert list(request.inputs[0].shape) == [2, 1, 2, 2] and request.inputs[0].datatype == "FP32"
    assert request.raw_input_contents[0] == pool.tobytes() and body.headers == {}


def test_check_rest_answer() -> None:
    target = replace(TARGET, protocol="v2-json", batch=2)
    ok = json.dumps({"model_name": "m", "outputs": [{"name": "logits", "shape": [2, 10]}]})
    check_rest_answer(200, {}, ok.encode(), target)
    with pytest.raises(TargetError, match="answered 413: at most 64 items per request"):
        check_rest_answer(413, {}, b'{"error": "at most 64 items per request"}', target)
    with pytest.raises(TargetError, match="answered 1 rows for 2"):
        check_rest_answer(200, {}, ok.replace("[2, 10]", "[1, 10]").encode(), target)
    with pytest.raises(TargetError, match="answered JSON, not the binary outputs"):
        check_rest_answer(200, {}, ok.encode(), replace(target, protocol="v2-binary"))
    header = ok.encode()
    framed = header + bytes(80)
    check_rest_answer(
        200, {BINARY_HEADER: str(len(header))}, framed, replace(target, protocol="v2-binary")
    )


class FakeRpcError(Exception):
    def __init__(self, code: str, details: str) -> None:
        self._code = type("Code", (), {"name": code})()
        self._details = details

    def code(self) -> object:
        return self._code

    def details(self) -> str:
        return self._details


def test_grpc_sentence() -> None:
    error = FakeRpcError("NOT_FOUND", "model 'nope' is not loaded")
    sentence = grpc_sentence(error, "127.0.0.1:8001")
    assert sentence == "gRPC 127.0.0.1:8001: model 'nope' is not loaded (NOT_FOUND)"
    down = grpc_sentence(FakeRpcError("UNAVAILABLE", "connection refused"), "127.0.0.1:9")
    assert down.startswith("no gRPC server answers at 127.0.0.1:9") and "--grpc-port" in down


def test_default_grpc_target() -> None:
    assert default_grpc_target("http://127.0.0.1:3000") == "127.0.0.1:8001"
    assert default_grpc_target("http://[::1]:3000/") == "[::1]:8001"


def test_target_json_round_trip() -> None:
    assert Target.from_json(TARGET.to_json()) == TARGET
    assert TARGET.infer_path == "/v2/models/mnist-cnn/versions/2/infer"
    assert (
        replace(TARGET, protocol="grpc").stats_name == "/inference.GRPCInferenceService/ModelInfer"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--batch", "4"], "--batch is the rows per V2/gRPC request"),
        (["--protocol", "v2-json", "--weights", "predict=1"], "--weights picks /predict"),
        (["--protocol", "grpc", "--batch-size", "4"], "--batch-size picks /predict"),
        (["--grpc-target", "127.0.0.1:8001"], "--grpc-target needs --protocol grpc"),
        (["--protocol", "v2-binary", "--grpc-target", "h:1"], "--grpc-target needs"),
        (["--protocol", "v2-json", "--batch", "0"], "--batch must be in 1.."),
        (["--batch-size", "65"], "--batch-size must be in 1..64"),
    ],
)
def test_usage_problems(argv: list[str], message: str) -> None:
    args = build_parser().parse_args(["run", "--host", "h", "--out", "o", *argv])
    problem = usage_problem(args)
    assert problem is not None and message in problem


def test_usage_without_problems() -> None:
    parser = build_parser()
    for argv in (
        [],
        ["--weights", "predict=2,batch=1", "--batch-size", "4"],
        ["--protocol", "v2-binary", "--batch", "32"],
        ["--protocol", "grpc", "--grpc-target", "127.0.0.1:8001", "--model", "digits-cnn"],
    ):
        args = parser.parse_args(["run", "--host", "h", "--out", "o", *argv])
        assert usage_problem(args) is None, argv
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "--host", "h", "--out", "o", "--protocol", "soap"])
