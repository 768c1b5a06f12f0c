"""`python -m loadtest` against a real server: short runs (seconds each) that check the
verdicts, the reports, the open loop's arrival rate, the protocols (http, v2-json, v2-binary,
grpc) and the server's split read from /metrics, not the server's speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.helpers import ROOT, Server, free_port


def loadtest(
    *args: str, timeout_s: float = 120, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loadtest", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def summary_of(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "summary.json").read_text())
    return data


STAGES = {"queue", "compute_input", "compute_infer", "compute_output"}


def assert_server_split(summary: dict[str, Any], model: str = "mnist-cnn") -> None:
    """The server counted exactly the run's requests (before/after deltas of /metrics for the
    model version driven), each with its four stages, and no failures."""
    assert summary["failures"] == 0, summary["failures_by_status"]
    server = summary["server"]
    assert server is not None, summary["server_note"]
    assert summary["server_note"] is None
    assert server["model"] == model
    assert server["requests"] == summary["requests"] > 0
    assert sum(server["requests_by_endpoint"].values()) == summary["requests"]
    assert server["stage_counts"] == dict.fromkeys(STAGES, summary["requests"])
    stages = server["stages_ms"]
    assert set(stages) == STAGES and all(v >= 0 for v in stages.values())
    assert stages["compute_infer"] > 0
    assert server["server_latency_ms"] >= sum(stages.values()) * 0.999
    client = server["client_latency_ms"]
    assert client["mean"] == summary["mean_ms"] > 0 and client["p99"] == summary["p99_ms"]
    assert server["unaccounted_ms"] == pytest.approx(client["mean"] - server["server_latency_ms"])


def test_run_meets_slo(server: Server, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = loadtest(
        "run", "--host", server.url, "--users", "4", "--duration", "3s",
        "--slo-p99-ms", "2000", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("summary.json", "report.html", "locust_stats.csv"):
        assert (out / name).is_file(), name
    summary = summary_of(out)
    assert summary["requests"] > 0 and summary["failures"] == 0 and summary["p99_ms"] > 0
    assert summary["slo_met"] is True and list(summary["endpoints"]) == ["/predict"]
    assert summary["images_per_s"] is None
    assert "PASS" in result.stdout and "p99" in result.stdout
    # --protocol http (the default) with the server's split, for the default model.
    assert summary["protocol"] == "http" and summary["tensors_per_s"] is None
    assert_server_split(summary)
    assert list(summary["server"]["requests_by_endpoint"]) == ["/predict"]
    assert "  Server: queue " in result.stdout and "network+server overhead" in result.stdout


def test_run_with_a_relative_out_folder(server: Server, tmp_path: Path) -> None:
    # Locust runs inside the out folder: a relative --out must not be resolved twice.
    result = loadtest("run", "--host", server.url, "--users", "2", "--duration", "2s",
                      "--out", "relative/run", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert summary_of(tmp_path / "relative" / "run")["requests"] > 0


def test_run_misses_slo(server: Server, tmp_path: Path) -> None:
    out = tmp_path / "slo"
    result = loadtest(
        "run", "--host", server.url, "--users", "2", "--duration", "2s",
        "--slo-p99-ms", "0.001", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    summary = summary_of(out)
    assert summary["failures"] == 0 and summary["slo_met"] is False
    assert "SLO         FAIL (p99" in result.stdout


def test_run_mixed_endpoints(server: Server, tmp_path: Path) -> None:
    out = tmp_path / "mixed"
    result = loadtest(
        "run", "--host", server.url, "--users", "4", "--duration", "3s",
        "--weights", "predict=2,batch=1,json=1", "--batch-size", "4", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    summary = summary_of(out)
    endpoints = summary["endpoints"]
    assert set(endpoints) == {"/predict", "/predict/batch", "/predict/json"}
    assert all(row["requests"] > 0 and row["failures"] == 0 for row in endpoints.values())
    assert summary["images_per_s"] > 0
    assert summary["images_per_s"] == pytest.approx(endpoints["/predict/batch"]["success_rps"] * 4)
    assert "images/s" in result.stdout


def test_run_open_loop_follows_arrival_rate(server: Server, tmp_path: Path) -> None:
    out = tmp_path / "open"
    result = loadtest(
        "run", "--host", server.url, "--rate", "40", "--users", "2", "--duration", "4s",
        "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    summary = summary_of(out)
    assert summary["rate"] == 40 and summary["failures"] == 0
    # Open loop: the achieved rate is the arrival rate, not what the server could take.
    assert 40 * 0.7 <= summary["success_rps"] <= 40 * 1.3, summary
    assert "open loop, 40 requests/s" in result.stdout


def test_run_host_not_ready(tmp_path: Path) -> None:
    result = loadtest(
        "run", "--host", f"http://127.0.0.1:{free_port()}", "--users", "1",
        "--duration", "2s", "--out", str(tmp_path / "down"),
    )  # fmt: skip
    assert result.returncode == 2
    assert "not ready" in result.stderr
    assert not (tmp_path / "down" / "summary.json").exists()


def test_sweep_writes_table_and_plot(server: Server, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    result = loadtest(
        "sweep", "--host", server.url, "--users", "1,4", "--duration", "2s", "--out", str(out)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[1/2] users    1" in result.stdout and "[2/2] users    4" in result.stdout
    rows = (out / "sweep.csv").read_text().splitlines()
    assert rows[0].startswith("users,rate,requests,failures,rps,success_rps") and len(rows) == 3
    table = (out / "sweep.md").read_text()
    assert "| users | success rps | p50 ms | p95 ms | p99 ms | failures |" in table
    assert "| 1 |" in table and "| 4 |" in table and "| 4 |" in result.stdout
    for users in (1, 4):
        assert summary_of(out / f"u{users}")["users"] == users
    png = out / "sweep.png"
    assert png.stat().st_size > 10_000
    with Image.open(png) as image:
        image.verify()
        assert image.format == "PNG"


@pytest.mark.parametrize(("protocol", "batch"), [("v2-json", 1), ("v2-binary", 32)])
def test_run_v2_protocols(server: Server, tmp_path: Path, protocol: str, batch: int) -> None:
    out = tmp_path / protocol
    result = loadtest(
        "run", "--host", server.url, "--protocol", protocol, "--batch", str(batch),
        "--users", "2", "--duration", "2s", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    summary = summary_of(out)
    assert summary["protocol"] == protocol and summary["batch"] == batch
    version = summary["server"]["version"]
    assert list(summary["endpoints"]) == [f"/v2/models/mnist-cnn/versions/{version}/infer"]
    assert summary["tensors_per_s"] == pytest.approx(summary["success_rps"] * batch)
    assert_server_split(summary)
    assert f"protocol    {protocol} mnist-cnn {version}" in result.stdout
    assert "tensors/s" in result.stdout and "  Server: queue " in result.stdout


def test_run_grpc_protocol(server: Server, tmp_path: Path) -> None:
    grpc_target = getattr(server, "grpc_target", None)
    if grpc_target is None:
        pytest.skip("the test server has no gRPC port (Server.grpc_target)")
    pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed")
    out = tmp_path / "grpc"
    result = loadtest(
        "run", "--host", server.url, "--protocol", "grpc", "--grpc-target", grpc_target,
        "--batch", "4", "--users", "2", "--duration", "2s", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    summary = summary_of(out)
    assert summary["protocol"] == "grpc" and summary["batch"] == 4
    assert list(summary["endpoints"]) == ["/inference.GRPCInferenceService/ModelInfer"]
    assert summary["tensors_per_s"] == pytest.approx(summary["success_rps"] * 4)
    assert_server_split(summary)
    # A model the server does not have: the server's answer as a sentence, before any load.
    missing = loadtest(
        "run", "--host", server.url, "--protocol", "grpc", "--grpc-target", grpc_target,
        "--model", "no-such-model", "--duration", "2s", "--out", str(tmp_path / "missing"),
    )  # fmt: skip
    assert missing.returncode == 2, missing.stdout + missing.stderr
    assert "not loaded" in missing.stderr and "Traceback" not in missing.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--protocol", "v2-json", "--model", "no-such-model"], "'no-such-model' is not loaded"),
        (["--protocol", "v2-binary", "--model", "text-topics"], "drives image models only"),
        (["--protocol", "v2-binary", "--batch", "1000"], "answered 413"),
        (["--protocol", "v2-json", "--weights", "batch=1"], "--weights picks /predict"),
    ],
)
def test_run_refuses_bad_combinations(
    server: Server, tmp_path: Path, args: list[str], message: str
) -> None:
    out = tmp_path / "bad"
    result = loadtest("run", "--host", server.url, *args, "--duration", "2s", "--out", str(out))
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (out / "summary.json").exists()
