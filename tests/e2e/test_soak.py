"""Soak (slow; run by hand with `pytest -m slow tests/e2e/test_soak.py -s`): a real server at
70% of its sustainable rate for 10 minutes, driven open-loop by `python -m loadtest`: zero
failures and resident memory growing less than 10%.

SOAK_RATE (default 400 requests/s: 70% of the 571/s that `python -m bench` measured as held
with p99 <= 50 ms on these 2-core machines with the default model, mnist-cnn) and SOAK_S
(default 600) override.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.helpers import ROOT, Server, running_server

RATE = float(os.environ.get("SOAK_RATE", "400"))
DURATION_S = int(os.environ.get("SOAK_S", "600"))
WARM_S = 60  # memory is measured from here: allocators and caches have settled by then


def tree_rss(server: Server) -> int:
    """Resident bytes of the supervisor, BentoML's arbiter and every worker."""
    root = psutil.Process(server.process.pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])


@pytest.mark.slow
# The suite's 600 s default would stop the server in the load's last seconds (the first run
# did: 4,456 connection errors in its final 2 s, none before).
@pytest.mark.timeout(DURATION_S + 300)
def test_soak_holds_70_percent_without_failures_or_growth(tmp_path: Path) -> None:
    with running_server(tmp_path / "server.log", "--model-repo", "exports") as server:
        out = tmp_path / "soak"
        load = subprocess.Popen(
            [
                sys.executable, "-m", "loadtest", "run", "--host", server.url,
                "--rate", str(RATE), "--users", "32", "--duration", f"{DURATION_S}s",
                "--out", str(out),
            ],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        time.sleep(WARM_S)
        start_rss = tree_rss(server)
        peak_rss = start_rss
        while load.poll() is None:
            peak_rss = max(peak_rss, tree_rss(server))
            time.sleep(5)
        end_rss = tree_rss(server)
        output = load.stdout.read().decode() if load.stdout else ""
    summary = json.loads((out / "summary.json").read_text())
    growth = end_rss / start_rss - 1
    print(
        f"\nsoak: {summary['requests']} requests at {summary['rps']:.0f}/s for {DURATION_S} s, "
        f"{summary['failures']} failures, p50 {summary['p50_ms']} ms p99 {summary['p99_ms']} ms; "
        f"RSS {start_rss / 2**20:.0f} MiB at {WARM_S} s -> {end_rss / 2**20:.0f} MiB at the end "
        f"(peak {peak_rss / 2**20:.0f} MiB, growth {growth:+.1%})"
    )
    assert load.returncode == 0, output
    assert summary["failures"] == 0, summary["failures_by_status"]
    assert summary["rps"] >= 0.9 * RATE, "the offered rate was not held"
    assert growth < 0.10
