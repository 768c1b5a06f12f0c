"""`python -m loadtest` against a real server: short runs (seconds each) that check the
verdicts, the reports and the open loop's arrival rate, not the server's speed."""

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
