"""The deployment files are valid for the tools that will read them: the compose schema,
promtool, the Kubernetes schemas, Grafana's provisioning, and Docker's build context; they
publish the same HTTP and gRPC ports; and the dashboard and rules read only metrics the service
defines.

No Docker engine runs here; what can be checked without one is checked for real."""

import fnmatch
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from service.core.metrics import STAGES, ServiceMetrics
from tests.helpers import ROOT, required_tool

COMPOSE_FILES = ["docker-compose.yml", "docker-compose.gpu.yml"]
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = sorted((PROMETHEUS / "rules").glob("*.yml"))
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
K8S = sorted((ROOT / "deploy" / "k8s").glob("*.yaml"))
HTTP_PORT = 3000
GRPC_PORT = 8001  # Triton's gRPC port, the service's default


def compose(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / name).read_text())
    return data


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_file_matches_the_compose_specification_schema(name: str) -> None:
    # check-jsonschema ships the compose specification's own JSON schema (no network).
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
         str(ROOT / name)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_builds_and_mounts_exist() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = set(re.findall(r"^FROM \S+ AS (\S+)$", dockerfile, re.MULTILINE))
    for name in COMPOSE_FILES:
        for service, spec in compose(name)["services"].items():
            build = spec.get("build")
            if build:
                assert (ROOT / build["context"] / build.get("dockerfile", "Dockerfile")).is_file()
                assert build["target"] in stages, (service, build["target"])
            for volume in spec.get("volumes", []):
                host = volume.split(":")[0]
                assert (ROOT / host).exists(), f"{service} mounts missing {host}"


def test_compose_runs_the_expected_stack() -> None:
    services = compose("docker-compose.yml")["services"]
    assert {"service", "prometheus", "grafana", "locust-master", "locust-worker"} <= set(services)
    assert services["service"]["ports"] == ["3000:3000", "8001:8001"]
    for locust in ("locust-master", "locust-worker"):
        assert services[locust]["profiles"] == ["loadtest"]
        assert "/mnt/project/loadtest/locustfile.py" in services[locust]["command"]
    assert (ROOT / "loadtest" / "locustfile.py").is_file()
    gpu = compose("docker-compose.gpu.yml")["services"]["service"]
    assert gpu["build"]["target"] == "gpu" and gpu["environment"]["DIGITSERVE_DEVICE"] == "cuda"


def _dockerignored(path: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatch(path, p) or path.startswith(p.rstrip("/") + "/")
               for p in patterns)  # fmt: skip


def test_dockerfile_copies_only_what_exists_and_is_not_ignored() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]  # fmt: skip
    sources = {s for line in re.findall(r"^COPY (?!--from)(.+)$", dockerfile, re.MULTILINE)
               for s in line.split()[:-1]}  # fmt: skip
    assert {"modelrepo", "service", "exports", "constraints.txt"} <= sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not _dockerignored(source, ignored), f".dockerignore drops {source}"
    for heavy in ("training", ".venv", "runs", "data"):
        assert _dockerignored(heavy, ignored), f"{heavy} would be sent to the Docker daemon"


def test_dockerfile_serves_without_torch_as_non_root_with_a_readiness_healthcheck() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    installs = re.findall(r"pip install [^\n]*'\.\[([a-z,]+)\]'", dockerfile)
    assert installs and all(extras == "serve" for extras in installs), installs
    assert not re.search(r"\[[a-z,]*train", dockerfile) and "torch==" not in dockerfile
    users = re.findall(r"^USER (\S+)$", dockerfile, re.MULTILINE)
    assert users and all(user not in ("root", "0") for user in users)
    assert dockerfile.count("HEALTHCHECK") == 2 and "/readyz" in dockerfile
    commands = [json.loads(c) for c in re.findall(r"^CMD (\[.*\])$", dockerfile, re.MULTILINE)]
    make_serve = re.search(r"^serve:.*\n\t\$\(BIN\)/python (.+)$",
                           (ROOT / "Makefile").read_text(), re.MULTILINE)  # fmt: skip
    assert make_serve
    for command in commands:  # make serve's command line, plus where to listen in a container
        assert command[:2] == ["python", "-m"]
        expected = make_serve[1].replace("$(PORT)", "3000").split()
        assert command[1 : len(expected) + 1] == expected, command
        assert command[len(expected) + 1 :] == ["--host", "0.0.0.0"]


def test_promtool_accepts_the_prometheus_config_and_rules(tmp_path: Path) -> None:
    tool = required_tool("promtool")
    config = (
        (PROMETHEUS / "prometheus.yml")
        .read_text()
        .replace("/etc/prometheus/rules/", f"{PROMETHEUS / 'rules'}/")
    )
    (tmp_path / "prometheus.yml").write_text(config)
    for args in (
        ["check", "config", str(tmp_path / "prometheus.yml")],
        ["check", "rules", *map(str, RULES)],
    ):
        result = subprocess.run([tool, *args], capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS" in result.stdout + result.stderr


@pytest.mark.parametrize("path", K8S, ids=[p.name for p in K8S])
def test_kubernetes_manifests_match_the_kubernetes_schemas(path: Path) -> None:
    for document in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(document, "1.37", strict=True)


def k8s(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "deploy" / "k8s" / name).read_text())
    return data


def test_kubernetes_probes_use_the_service_health_endpoints() -> None:
    deployment = k8s("deployment.yaml")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    probes = {"startupProbe": "/readyz", "readinessProbe": "/readyz", "livenessProbe": "/livez"}
    for probe, path in probes.items():  # on HTTP, not the gRPC listener
        assert set(container[probe]) - {"httpGet"} <= {
            "periodSeconds", "timeoutSeconds", "failureThreshold", "initialDelaySeconds",
            "successThreshold",
        }, probe  # fmt: skip
        assert container[probe]["httpGet"]["path"] == path
        assert ports[container[probe]["httpGet"]["port"]] == HTTP_PORT, probe
    assert container["resources"]["requests"] and container["resources"]["limits"]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    kinds = {yaml.safe_load(p.read_text())["kind"] for p in K8S}
    assert kinds == {"Deployment", "Service", "HorizontalPodAutoscaler"}


def test_grafana_provisioning_points_at_the_dashboard_and_datasource() -> None:
    grafana = ROOT / "deploy" / "grafana"
    datasource = yaml.safe_load((grafana / "provisioning/datasources/prometheus.yml").read_text())
    uid = datasource["datasources"][0]["uid"]
    dashboard = json.loads((grafana / "dashboards" / "digitserve.json").read_text())
    titles = [p["title"] for p in dashboard["panels"]]
    for wanted in (
        "Requests per second",
        "Latency quantiles",
        "Items per onnxruntime call",
        "Inference time by model",
        "Queue, input and output time by model",
        "Where the time goes",
        "Errors by status",
        "Models loaded",
    ):
        assert any(t.startswith(wanted) for t in titles), wanted
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), ids
    cells = [
        (x, y)
        for p in dashboard["panels"]
        for x in range(p["gridPos"]["x"], p["gridPos"]["x"] + p["gridPos"]["w"])
        for y in range(p["gridPos"]["y"], p["gridPos"]["y"] + p["gridPos"]["h"])
    ]
    assert len(cells) == len(set(cells)), "dashboard panels overlap"
    assert all(x < 24 for x, _ in cells), "a panel is wider than the 24-column grid"
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == uid
        assert all(target["expr"] for target in panel["targets"])


# ---- ports: HTTP 3000 and gRPC 8001 in every deployment file ------------------------------


def _dockerfile_stages() -> dict[str, str]:
    parts = re.split(r"^FROM \S+ AS (\S+)$", (ROOT / "Dockerfile").read_text(), flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_the_grpc_port_is_published_with_the_same_number_everywhere() -> None:
    runtime = {name: text for name, text in _dockerfile_stages().items() if "\nCMD " in text}
    assert set(runtime) == {"cpu", "gpu"}
    for name, text in runtime.items():
        exposed = {int(p) for line in re.findall(r"^EXPOSE (.+)$", text, re.M)
                   for p in line.split()}  # fmt: skip
        assert exposed == {HTTP_PORT, GRPC_PORT}, name
        assert re.search(rf"^\s+DIGITSERVE_GRPC_PORT={GRPC_PORT}\b", text, re.M), name
        # The gRPC listener binds the HTTP listener's host: all interfaces in the container.
        assert re.search(r'^CMD \[.*"--host", "0\.0\.0\.0"\]$', text, re.M), name

    ports = compose("docker-compose.yml")["services"]["service"]["ports"]
    assert f"{GRPC_PORT}:{GRPC_PORT}" in ports and f"{HTTP_PORT}:{HTTP_PORT}" in ports
    assert "ports" not in compose("docker-compose.gpu.yml")["services"]["service"]

    container = k8s("deployment.yaml")["spec"]["template"]["spec"]["containers"][0]
    container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container_ports == {"http": HTTP_PORT, "grpc": GRPC_PORT}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env.get("DIGITSERVE_GRPC_PORT", str(GRPC_PORT)) == str(GRPC_PORT)

    service_ports = {p["name"]: p for p in k8s("service.yaml")["spec"]["ports"]}
    assert set(service_ports) == {"http", "grpc"}
    grpc = service_ports["grpc"]
    assert grpc["port"] == GRPC_PORT and grpc.get("appProtocol") == "grpc"
    assert container_ports.get(grpc["targetPort"], grpc["targetPort"]) == GRPC_PORT
    http = service_ports["http"]
    assert container_ports.get(http["targetPort"], http["targetPort"]) == HTTP_PORT


def test_the_grpc_port_is_the_service_default_and_binds_the_http_host() -> None:
    from service.settings import ServiceSettings

    assert ServiceSettings.model_fields["grpc_port"].default == GRPC_PORT
    # python -m service binds gRPC to --host unless DIGITSERVE_GRPC_HOST is set: setting it
    # in a deployment file would split the two listeners' addresses.
    container = k8s("deployment.yaml")["spec"]["template"]["spec"]["containers"][0]
    texts = {
        "Dockerfile": (ROOT / "Dockerfile").read_text(),
        **{name: (ROOT / name).read_text() for name in COMPOSE_FILES},
        "deployment.yaml": " ".join(e["name"] for e in container["env"]),
    }
    for name, text in texts.items():
        assert "DIGITSERVE_GRPC_HOST" not in text, name


# ---- the dashboard and rules read metrics the service defines -----------------------------

SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
    "summary": ("", "_sum", "_count", "_created"),
}


def _service_series_names() -> set[str]:
    """The series names ServiceMetrics exposes, built on a private registry."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    ServiceMetrics(max_batch_size=32, registry=registry)
    names = {f.name + suffix for f in registry.collect() for suffix in SUFFIXES[f.type]}
    assert "digitserve_stage_seconds_bucket" in names  # the suffixes are as expected
    return names


def _rules() -> list[dict[str, Any]]:
    return [rule for path in RULES for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"]]  # fmt: skip


def _queries() -> dict[str, str]:
    """Every PromQL expression in the dashboards and rules, by where it is."""
    queries = {
        f"{path.name} panel {panel['id']} {target['refId']}": target["expr"]
        for path in DASHBOARDS
        for panel in json.loads(path.read_text())["panels"]
        for target in panel["targets"]
    }
    for rule in _rules():
        queries[f"rule {rule.get('record') or rule.get('alert')}"] = rule["expr"]
    return queries


STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def test_dashboards_and_rules_read_only_metrics_the_service_defines() -> None:
    series = _service_series_names()
    recorded = {rule["record"] for rule in _rules() if "record" in rule}
    used: set[str] = set()
    for where, expr in _queries().items():
        for name in NAME.findall(STRING.sub('""', expr)):
            if ":" in name:  # a recording rule's name
                assert name in recorded, f"{where}: {name} is no recording rule"
            elif name.startswith("digitserve_"):
                assert name in series, f"{where}: the service defines no {name}"
                used.add(name)
        for values in re.findall(r'\bstage\s*!?=~?\s*"([^"]*)"', expr):
            for stage in values.split("|"):
                assert stage in STAGES, f"{where}: no stage {stage!r} (stages: {STAGES})"
    # What the stage histogram replaced is gone, and it is read instead.
    for removed in ("preprocess_seconds", "inference_seconds", "queue_wait_seconds"):
        assert not any(removed in expr for expr in _queries().values()), removed
    assert {"digitserve_stage_seconds_bucket", "digitserve_stage_seconds_sum",
            "digitserve_stage_seconds_count"} <= used  # fmt: skip


def test_promtool_accepts_every_dashboard_query(tmp_path: Path) -> None:
    # Each dashboard query as a recording rule, so promtool parses the PromQL Grafana sends.
    tool = required_tool("promtool")
    rules = [
        {"record": f"dashboard:query_{i}", "expr": expr}
        for i, (where, expr) in enumerate(_queries().items())
        if not where.startswith("rule ")
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([tool, "check", "rules", str(path)],
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout + result.stderr
