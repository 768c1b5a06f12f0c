"""The load test's parsing and reporting, without Locust or a server: durations, weights,
Locust's failure texts, its CSV files, the Summary JSON and the sweep's table and plot."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, fields, replace
from pathlib import Path

import pytest
from PIL import Image

from loadtest.cli import build_parser, format_summary, plot_sweep, sweep_table
from loadtest.images import label_of, load_images
from loadtest.runner import (
    Summary,
    failure_status,
    parse_duration,
    parse_weights,
    read_failures,
    summarise,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("2m", 120),
        ("45", 45),
        ("1m30s", 90),
        ("1h", 3600),
        ("1.5s", 1.5),
        (" 10S ", 10),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "s", "abc", "10x", "0", "0s", "-5", "nan", "inf", "2m-1s"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_parse_weights() -> None:
    assert parse_weights("predict=8,batch=1,json=1") == {
        "predict": 8,
        "batch": 1,
        "json": 1,
        "explain": 0,
    }
    assert parse_weights("explain=2")["explain"] == 2
    assert parse_weights("predict=1") == {"predict": 1, "batch": 0, "json": 0, "explain": 0}
    assert parse_weights(" batch = 2 , ") == {"predict": 0, "batch": 2, "json": 0, "explain": 0}
    assert parse_weights("predict=1,batch=0,json=0")["predict"] == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("predict=0", "must be > 0"),
        ("", "must be > 0"),
        ("predict", "NAME=INT"),
        ("stream=1", "unknown name"),
        ("predict=x", "not an integer"),
        ("predict=-1", ">= 0"),
        ("predict=1,predict=2", "twice"),
    ],
)
def test_parse_weights_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_weights(text)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        # The Error column of locust_failures.csv, as Locust 2.47 + FastHttpUser write it.
        ("LocustBadStatusCode(code=503)", "503"),
        ("LocustBadStatusCode(code=404)", "404"),
        ("BadStatusCode('http://127.0.0.1:3000/predict', code=503)", "503"),
        ("HTTPError('503 Server Error: Service Unavailable for url: /predict')", "503"),
        ("CatchResponseError('Got status code 500')", "500"),
        ("ClientOverloaded('client overloaded: 256 requests in flight')", "client overloaded"),
        ("ConnectionRefusedError(111, 'Connection refused')", "connection"),
        ("ConnectionResetError(104, 'Connection reset by peer')", "connection"),
        ("RemoteDisconnected('Remote end closed connection without response')", "connection"),
        ("EmptyResponse('Empty response from server')", "connection"),
        ("BrokenPipeError(32, 'Broken pipe')", "connection"),
        ("timeout('timed out')", "timeout"),
        ("ConnectionTimeout('connection timed out')", "timeout"),
        ("CatchResponseError(\"unexpected answer: b'{}'\")", "other"),
    ],
)
def test_failure_status(error: str, status: str) -> None:
    assert failure_status(error) == status


STATS_HEADER = (
    "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,"
    "Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,"
    "50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%"
)


def write_locust_csv(out: Path, stats_rows: list[str], failures: list[list[str]]) -> None:
    (out / "locust_stats.csv").write_text("\n".join([STATS_HEADER, *stats_rows]) + "\n")
    with (out / "locust_failures.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["Method", "Name", "Error", "Occurrences", "First Seen", "Last Seen"])
        writer.writerows(failures)


def test_summarise_locust_csv(tmp_path: Path) -> None:
    write_locust_csv(
        tmp_path,
        [
            "POST,/predict,800,20,7,8.1,0.9,120.5,245,80.0,2.0,7,8,9,10,12,15,30,40,90,120,120",
            "POST,/predict/batch,100,0,20,22.0,5.0,60.2,4000,10.0,0.0,20,21,22,23,30,40,50,55,60,60,60",
            "POST,/predict/json,0,0,0,0,0,0,0,0.0,0.0,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A",
            ",Aggregated,900,20,8,9.0,0.9,120.5,600,90.0,2.0,8,9,10,11,14,18,35,45,90,120,120",
        ],
        [
            ["POST", "/predict", "LocustBadStatusCode(code=503)", "12", "", ""],
            ["POST", "/predict", "ClientOverloaded('client overloaded: 3 in flight')", "5", "", ""],
            ["POST", "/predict", "ConnectionResetError(104, 'reset by peer')", "2", "", ""],
            ["POST", "/predict", "LocustBadStatusCode(code=503)", "1", "", ""],
        ],
    )
    summary = summarise(
        tmp_path,
        host="http://127.0.0.1:3000",
        users=8,
        duration_s=10,
        rate=None,
        batch_size=16,
        slo_p99_ms=50,
    )
    assert (summary.requests, summary.failures, summary.rps) == (900, 20, 90.0)
    assert summary.success_rps == pytest.approx(90.0 * 880 / 900)
    assert (summary.p50_ms, summary.p95_ms, summary.p99_ms, summary.max_ms) == (8, 18, 45, 120.5)
    assert summary.failures_by_status == {"503": 13, "client overloaded": 5, "connection": 2}
    assert list(summary.endpoints) == ["/predict", "/predict/batch", "/predict/json"]
    assert summary.endpoints["/predict"]["p99_ms"] == 40
    assert summary.endpoints["/predict"]["mean_ms"] == 8.1 and summary.mean_ms == 9.0
    assert summary.endpoints["/predict/json"] == {
        "requests": 0,
        "failures": 0,
        "rps": 0.0,
        "success_rps": 0.0,
        "mean_ms": 0.0,
        "p50_ms": 0.0,
        "p95_ms": 0.0,
        "p99_ms": 0.0,
        "max_ms": 0.0,
    }
    assert summary.images_per_s == pytest.approx(10.0 * 16)
    # p99 45 <= 50, but there were failures.
    assert not summary.slo_met


def summarise_at(out: Path, slo_p99_ms: float | None) -> Summary:
    return summarise(
        out, host="h", users=1, duration_s=2, rate=None, batch_size=32, slo_p99_ms=slo_p99_ms
    )


def test_summarise_slo_and_no_batch(tmp_path: Path) -> None:
    write_locust_csv(
        tmp_path,
        [
            "POST,/predict,100,0,7,8,1,30,245,50.0,0.0,7,8,9,10,12,15,20,25,30,30,30",
            ",Aggregated,100,0,7,8,1,30,245,50.0,0.0,7,8,9,10,12,15,20,25,30,30,30",
        ],
        [],
    )
    assert summarise_at(tmp_path, 25).slo_met
    assert not summarise_at(tmp_path, 24.9).slo_met
    summary = summarise_at(tmp_path, None)
    assert summary.slo_met and summary.images_per_s is None and summary.failures_by_status == {}


def test_summarise_refuses_empty_or_unreachable(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"no locust_stats\.csv"):
        summarise_at(tmp_path, None)
    write_locust_csv(
        tmp_path,
        [",Aggregated,0,0,0,0,0,0,0,0.0,0.0,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A"],
        [],
    )
    with pytest.raises(RuntimeError, match="no requests"):
        summarise_at(tmp_path, None)
    write_locust_csv(
        tmp_path,
        [",Aggregated,50,50,1,1,0,2,0,25.0,25.0,1,1,1,1,1,1,2,2,2,2,2"],
        [["POST", "/predict", "ConnectionRefusedError(111, 'Connection refused')", "50", "", ""]],
    )
    with pytest.raises(RuntimeError, match="every request failed to connect"):
        summarise_at(tmp_path, None)


def test_read_failures_without_file(tmp_path: Path) -> None:
    assert read_failures(tmp_path / "missing.csv") == {}


SUMMARY = Summary(
    host="http://127.0.0.1:3000",
    users=8,
    duration_s=10.0,
    rate=None,
    requests=1000,
    failures=3,
    rps=100.0,
    success_rps=99.7,
    p50_ms=7.0,
    p95_ms=15.0,
    p99_ms=25.0,
    max_ms=40.5,
    failures_by_status={"503": 3},
    endpoints={
        "/predict": {"requests": 900, "failures": 3, "rps": 90.0, "p50_ms": 7.0, "p99_ms": 25.0},
        "/predict/batch": {"requests": 100, "failures": 0, "rps": 10.0, "p50_ms": 9, "p99_ms": 30},
    },
    images_per_s=320.0,
    slo_p99_ms=50.0,
    slo_met=False,
)


def test_summary_json_round_trip() -> None:
    text = SUMMARY.to_json()
    data = json.loads(text)
    assert set(data) == {f.name for f in fields(Summary)}
    assert data["failures_by_status"] == {"503": 3}
    assert data["endpoints"]["/predict"]["p99_ms"] == 25.0
    assert data["rate"] is None and data["slo_met"] is False
    assert Summary.from_json(text) == SUMMARY
    assert asdict(Summary.from_json(text)) == asdict(SUMMARY)


def test_format_summary_is_one_screen() -> None:
    text = format_summary(SUMMARY)
    lines = text.splitlines()
    assert len(lines) <= 24 and max(len(line) for line in lines) <= 100
    assert "503: 3" in text and "images/s" in text and "/predict/batch" in text
    assert "SLO         FAIL (3 failures)" in text
    ok = replace(SUMMARY, failures=0, failures_by_status={}, slo_met=True, rate=40.0)
    assert "PASS" in format_summary(ok) and "open loop, 40 requests/s" in format_summary(ok)


def test_sweep_table_and_plot(tmp_path: Path) -> None:
    levels = [
        replace(SUMMARY, users=u, success_rps=r, p50_ms=p, p95_ms=2 * p, p99_ms=3 * p)
        for u, r, p in [(1, 300.0, 2.0), (4, 900.0, 4.0), (16, 1500.0, 9.0), (64, 1600.0, 40.0)]
    ]
    table = sweep_table(levels).splitlines()
    assert table[0].startswith("| users | success rps |") and len(table) == 2 + len(levels)
    assert table[2].startswith("| 1 | 300.0 |")
    path = tmp_path / "sweep.png"
    plot_sweep(path, levels, title="test sweep", slo_p99_ms=50)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width >= 800


def test_parser_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    for argv in (
        ["run", "--host", "h", "--out", "o", "--duration", "4x"],
        ["run", "--host", "h", "--out", "o", "--weights", "predict=0"],
        ["run", "--host", "h", "--out", "o", "--users", "0"],
        ["sweep", "--host", "h", "--out", "o", "--users", "1,x"],
        ["run", "--out", "o"],
    ):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(argv)
        assert exit_info.value.code == 2
    assert "duration '4x'" in capsys.readouterr().err
    args = parser.parse_args(["sweep", "--host", "h", "--out", "o", "--rates", "100,200"])
    assert args.rates == [100.0, 200.0] and args.duration == 10


def test_load_images() -> None:
    images = load_images()
    assert len(images) == 1000
    name, data = images[0]
    assert data.startswith(b"\x89PNG") and label_of(name) in {str(d) for d in range(10)}
    assert load_images() == images
