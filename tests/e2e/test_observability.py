"""Observability and the container's command line, against real processes: every metric the
Prometheus rules and the Grafana dashboard use exists on a real service's /metrics; a real
Prometheus (Debian's) scrapes a real service; the Dockerfile's CMD and HEALTHCHECK work."""

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.helpers import (
    ROOT,
    Server,
    free_port,
    required_tool,
    running_server,
    stop_process_group,
)

RULES = ROOT / "deploy" / "prometheus" / "rules" / "digitserve.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "digitserve.json"
SEVEN = (ROOT / "examples" / "digits" / "7.png").read_bytes()


def rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(RULES.read_text())["groups"]
    return groups


def expressions() -> list[str]:
    exprs = [rule["expr"] for group in rule_groups() for rule in group["rules"]]
    dashboard = json.loads(DASHBOARD.read_text())
    exprs += [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    return exprs


def test_every_metric_in_rules_and_dashboard_exists_on_a_real_service(server: Server) -> None:
    httpx.post(f"{server.url}/predict", files={"image": SEVEN})
    httpx.post(f"{server.url}/predict", files={"image": b"junk"})
    exposed = {line.split("{")[0].split(" ")[0]
               for line in httpx.get(f"{server.url}/metrics").text.splitlines()
               if line and not line.startswith("#")}  # fmt: skip
    recorded = {rule["record"] for group in rule_groups() for rule in group["rules"]
                if "record" in rule}  # fmt: skip
    used: set[str] = set()
    colon_name = r"\b[a-z_]+:[a-z_]+:[a-z0-9_]+\b"  # level:metric:operations (recorded)
    for expr in expressions():
        used |= set(re.findall(colon_name, expr))
        plain = re.sub(colon_name, " ", expr)
        used |= set(re.findall(r"\b((?:digitserve|bentoml)_[a-z_]+)\b", plain))
    missing = sorted(n for n in used if n not in exposed and n not in recorded)
    assert not missing, f"not on /metrics and not recorded: {missing}"
    assert {"digitserve_batch_images_bucket", "bentoml_service_request_total"} <= used


@pytest.fixture
def prometheus(server: Server, tmp_path: Path) -> Iterator[str]:
    """A real Prometheus on loopback with the project's config and rules, scraping `server`."""
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(RULES)]
    config["scrape_configs"][0]["static_configs"] = [
        {"targets": [server.url.removeprefix("http://")]}
    ]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [required_tool("prometheus"), f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process_group(process)
        log.close()


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    try:
        r = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=5)
    except httpx.TransportError:
        return []
    result: list[dict[str, Any]] = r.json()["data"]["result"] if r.status_code == 200 else []
    return result


def wait_for(prometheus: str, expr: str, server: Server, timeout_s: float = 40) -> list[Any]:
    """Poll `expr` while sending some traffic, until it has a (non-NaN) value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for _ in range(20):
            httpx.post(f"{server.url}/predict", files={"image": SEVEN})
        result = [r for r in query(prometheus, expr) if r["value"][1] not in ("NaN", "+Inf")]
        if result:
            return result
        time.sleep(0.5)
    raise AssertionError(f"Prometheus never had a value for {expr}")


def test_real_prometheus_scrapes_the_service_and_records_latency(
    server: Server, prometheus: str
) -> None:
    # Until a scrape has succeeded: the very first one can miss the test's 1 s scrape timeout
    # while Prometheus itself starts on a loaded core (seen pinned to one core: up 0, then 1).
    up = wait_for(prometheus, 'up{job="digitserve"} == 1', server)
    assert up[0]["value"][1] == "1"
    p99 = wait_for(prometheus,
                   'endpoint:bentoml_service_request_duration_seconds:p99_1m{endpoint="/predict"}',
                   server)  # fmt: skip
    assert 0 < float(p99[0]["value"][1]) < 5
    per_model = wait_for(prometheus, "endpoint_model:digitserve_request_seconds:p50_1m", server)
    assert {r["metric"]["model"] for r in per_model} == {"mnist-cnn"}
    batch = wait_for(prometheus, "model:digitserve_batch_images:mean_rate1m", server)
    assert float(batch[0]["value"][1]) >= 1
    infer = wait_for(prometheus,
                     'model_stage:digitserve_stage_seconds:p99_1m{stage="compute_infer"}',
                     server)  # fmt: skip
    assert {r["metric"]["model"] for r in infer} == {"mnist-cnn"}
    assert 0 < float(infer[0]["value"][1]) < 5
    stages = wait_for(prometheus, "stage:digitserve_stage_seconds:mean_rate1m", server)
    assert {r["metric"]["stage"] for r in stages} == {
        "queue", "compute_input", "compute_infer", "compute_output"
    }  # fmt: skip


def json_after(prefix: str, text: str) -> list[str]:
    """The JSON array that follows `prefix` on a line of `text` (a Dockerfile exec form)."""
    found = re.search(prefix + r"(\[.*\])$", text, re.MULTILINE)
    assert found, f"no {prefix!r} line"
    command: list[str] = json.loads(found[1])
    return command


def container_commands() -> tuple[list[str], list[str]]:
    """The CPU image's CMD and HEALTHCHECK command lines, as the Dockerfile writes them."""
    text = (ROOT / "Dockerfile").read_text()
    cpu_stage = text.split("AS cpu\n", 1)[1].split("\nFROM ", 1)[0]
    healthcheck = cpu_stage.split("HEALTHCHECK", 1)[1]
    return json_after(r"^CMD ", cpu_stage), json_after(r"\bCMD ", healthcheck)


def test_the_dockerfile_command_line_starts_the_server(tmp_path: Path) -> None:
    cmd, health = container_commands()
    port = free_port()

    def local(argv: list[str]) -> list[str]:
        # The image's python is .venv's here; loopback instead of all interfaces (house rule).
        replaced = [sys.executable if a == "python" else a for a in argv]
        return [a.replace("0.0.0.0", "127.0.0.1").replace("3000", str(port)) for a in replaced]

    env = {"DIGITSERVE_HOST": "127.0.0.1", "DIGITSERVE_PORT": str(port),
           "BENTOML_HOME": str(tmp_path / "bentoml")}  # fmt: skip
    with running_server(tmp_path / "container.log", command=local(cmd), port=port, env=env) as srv:
        assert httpx.get(f"{srv.url}/readyz").json()["ready"] is True
        check = subprocess.run(local(health), capture_output=True, timeout=10, check=False)
        assert check.returncode == 0, check.stderr
    failing = subprocess.run(local(health), capture_output=True, timeout=10, check=False)
    assert failing.returncode != 0  # the same healthcheck fails once the server is gone


def endpoint_labels(server: Server) -> set[str]:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return set(re.findall(r'^bentoml_service_request_total\{endpoint="([^"]*)"', text, re.M))


def test_made_up_paths_do_not_grow_the_request_metrics(server: Server) -> None:
    # BentoML labelled its request metrics with the raw path: after the fuzz and hostile tests
    # one server's /metrics held 511 endpoints and 2.3 MB, and scrapes timed out on one core.
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for i in range(100):
            assert client.get(f"/made-up/{i}/{'x' * i}").status_code == 404
            client.post(f"/v2/models/made-up-{i}/infer", json={"inputs": []})
    labels = endpoint_labels(server)
    assert not any("made-up" in label for label in labels), labels
    assert {"other", "/v2/models/{name}/infer"} <= labels
