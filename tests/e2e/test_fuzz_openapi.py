"""Schemathesis fuzzes the OpenAPI schema the server publishes against the real server.

The schema is /docs.json, the one the OpenAPI page at /docs shows (the API's routes merged with
BentoML's /healthz and /metrics). Schemathesis's CLI runs its examples, coverage (boundary and
negative values) and fuzzing phases on every operation, deterministically, against the
loopback server only, and checks every response: no 5xx, a documented status code, the
documented content type and headers, and a body valid against the documented schema.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Server

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)
MAX_EXAMPLES = 250  # per operation and phase: about 950 cases in under 10 s on 2 cores
MIN_CASES = 500
TIME_LIMIT_S = 110


def interactions(ndjson: Path) -> list[dict[str, Any]]:
    """Every request schemathesis sent and the response it got, from its ndjson report."""
    found = []
    for line in ndjson.read_text().splitlines():
        event = json.loads(line)
        if "ScenarioFinished" in event:
            found += event["ScenarioFinished"]["recorder"].get("interactions", {}).values()
    return found


def failed_checks(ndjson: Path) -> Counter[str]:
    failed: Counter[str] = Counter()
    for line in ndjson.read_text().splitlines():
        event = json.loads(line)
        if "ScenarioFinished" in event:
            for results in event["ScenarioFinished"]["recorder"].get("checks", {}).values():
                failed.update(r["name"] for r in results if r["status"] != "success")
    return failed


def test_openapi_schema_fuzz(
    server: Server,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    record_property: Callable[[str, object], None],
) -> None:
    report, events = tmp_path / "report.json", tmp_path / "events.ndjson"
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", f"{server.url}/docs.json",
        "--url", server.url,  # requests go to the loopback server, whatever `servers` says
        "--checks", ",".join(CHECKS),
        "--phases", "examples,coverage,fuzzing",
        "--max-examples", str(MAX_EXAMPLES),
        "--generation-deterministic",  # the same cases every run; no example database
        "--workers", "1",
        "--continue-on-failure",
        "--request-timeout", "30",
        "--report", "json,ndjson",
        "--report-json-path", str(report),
        "--report-ndjson-path", str(events),
        "--no-color",
    ]  # fmt: skip
    started = time.monotonic()
    result = subprocess.run(  # cwd: its .hypothesis and .schemathesis folders go to tmp_path
        command, cwd=tmp_path, capture_output=True, text=True, timeout=TIME_LIMIT_S, check=False
    )
    elapsed = time.monotonic() - started
    output = result.stdout[-12_000:] + result.stderr[-4_000:]
    assert report.exists(), output

    summary = json.loads(report.read_text())
    sent = interactions(events)
    statuses = Counter(i["response"]["status_code"] for i in sent if i.get("response"))
    cases = summary["test_cases"]["generated"]
    line = (
        f"schemathesis: {cases} cases ({len(sent)} requests) on "
        f"{summary['operations']['tested']} operations in {elapsed:.1f} s; statuses "
        f"{dict(sorted(statuses.items()))}"
    )
    with capsys.disabled():  # on the terminal in every run, not only with -s
        print(f"\n{line}")
    record_property("schemathesis_cases", cases)
    record_property("schemathesis_seconds", round(elapsed, 1))

    assert summary["operations"]["errored"] == 0 and not summary["errors"], output
    assert cases >= MIN_CASES, line
    assert len(sent) >= MIN_CASES and all(i.get("response") for i in sent), line
    server_errors = sum(n for status, n in statuses.items() if status >= 500)
    assert server_errors == 0, f"{server_errors} 5xx responses; {line}\n{output}"
    failed = failed_checks(events)
    assert not failed, f"failed checks {dict(failed)}; {line}\n{output}"
    assert summary["failures"] == [] and summary["test_cases"]["with_failures"] == 0, output
    assert result.returncode == 0, output
    assert {"/predict", "/predict/batch", "/predict/json"} <= {
        i["request"]["uri"].removeprefix(server.url).split("?")[0] for i in sent
    }
