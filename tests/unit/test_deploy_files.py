"""The deployment files are valid for the tools that will read them: the compose schema,
promtool, the Kubernetes schemas, Grafana's provisioning, and Docker's build context.

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

from tests.helpers import ROOT, required_tool

COMPOSE_FILES = ["docker-compose.yml", "docker-compose.gpu.yml"]
PROMETHEUS = ROOT / "deploy" / "prometheus"
K8S = sorted((ROOT / "deploy" / "k8s").glob("*.yaml"))


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
    assert services["service"]["ports"] == ["3000:3000"]
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
        ["check", "rules", *map(str, (PROMETHEUS / "rules").glob("*.yml"))],
    ):
        result = subprocess.run([tool, *args], capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS" in result.stdout + result.stderr


@pytest.mark.parametrize("path", K8S, ids=[p.name for p in K8S])
def test_kubernetes_manifests_match_the_kubernetes_schemas(path: Path) -> None:
    for document in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(document, "1.37", strict=True)


def test_kubernetes_probes_use_the_service_health_endpoints() -> None:
    deployment = yaml.safe_load((ROOT / "deploy" / "k8s" / "deployment.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
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
        "Images per onnxruntime call",
        "Inference and preprocessing",
        "Errors by status",
        "Models loaded",
    ):
        assert any(t.startswith(wanted) for t in titles), wanted
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == uid
        assert all(target["expr"] for target in panel["targets"])
