"""The server's side of a run, as perf_analyzer reports it: GET {host}/metrics before and after,
and the difference of `digitserve_stage_seconds` (queue, compute_input, compute_infer,
compute_output) and `digitserve_request_seconds` (arrival to answer) for the model version
driven, set beside the latency the client measured.

prometheus_client is imported when a scrape is parsed, not with this module: the locustfile
imports the runner, which imports this, in images (Locust's own) that do not have it.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

STAGES = ("queue", "compute_input", "compute_infer", "compute_output")
STAGE_METRIC = "digitserve_stage_seconds"
REQUEST_METRIC = "digitserve_request_seconds"
SCRAPE_TIMEOUT_S = 10.0


class MetricsUnavailable(Exception):
    """GET {host}/metrics did not answer with Prometheus text."""


@dataclass
class Totals:
    """One scrape's cumulative sums (seconds) and counts, by model and version."""

    # (model, version, stage) -> [sum, count]
    stages: dict[tuple[str, str, str], list[float]] = field(default_factory=dict)
    # (model, version, endpoint) -> [sum, count]
    requests: dict[tuple[str, str, str], list[float]] = field(default_factory=dict)


def parse_metrics(text: str) -> Totals:
    """The `_sum` and `_count` samples of the two histograms in a /metrics text, added up over
    any series that share their labels (the server sums its workers already)."""
    from prometheus_client.parser import text_string_to_metric_families

    totals = Totals()
    wanted = {
        f"{STAGE_METRIC}_sum": (totals.stages, "stage", 0),
        f"{STAGE_METRIC}_count": (totals.stages, "stage", 1),
        f"{REQUEST_METRIC}_sum": (totals.requests, "endpoint", 0),
        f"{REQUEST_METRIC}_count": (totals.requests, "endpoint", 1),
    }
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError as error:
        raise MetricsUnavailable(f"/metrics is not Prometheus text: {error}") from None
    for family in families:
        for sample in family.samples:
            target = wanted.get(sample.name)
            if target is None:
                continue
            table, label, index = target
            labels = sample.labels
            key = (labels.get("model", ""), labels.get("version", ""), labels.get(label, ""))
            table.setdefault(key, [0.0, 0.0])[index] += float(sample.value)
    return totals


def scrape(host: str, timeout_s: float = SCRAPE_TIMEOUT_S) -> Totals:
    """GET {host}/metrics, parsed; MetricsUnavailable (with the reason) when it cannot be."""
    url = f"{host.rstrip('/')}/metrics"
    # No proxies: the target is a local server, and an HTTP(S)_PROXY would misroute it.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout_s) as response:
            text = response.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as error:
        raise MetricsUnavailable(f"GET {url} answered {error.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise MetricsUnavailable(f"GET {url}: {reason}") from None
    try:
        return parse_metrics(text)
    except ImportError:
        raise MetricsUnavailable(
            "prometheus_client is not installed (pip install prometheus-client)"
        ) from None


def _delta(
    before: dict[tuple[str, str, str], list[float]],
    after: dict[tuple[str, str, str], list[float]],
    model: str,
    version: str,
) -> dict[str, tuple[float, int]]:
    """label -> (sum, count) observed between the scrapes, for one model version. A series that
    went down (a restarted worker's share dropped) counts from zero rather than negatively."""
    out: dict[str, tuple[float, int]] = {}
    for (m, v, label), (total, count) in after.items():
        if (m, v) != (model, version):
            continue
        old_total, old_count = before.get((m, v, label), (0.0, 0.0))
        if count < old_count:
            old_total, old_count = 0.0, 0.0
        if count - old_count > 0:
            out[label] = (total - old_total, round(count - old_count))
    return out


def server_split(
    before: Totals,
    after: Totals,
    *,
    model: str,
    version: str,
    client_p50_ms: float,
    client_p99_ms: float,
    client_mean_ms: float,
) -> dict[str, Any]:
    """The `server` block of summary.json: what the server measured for `model` `version`
    between two scrapes (means in ms) beside the client's latency.

    requests: successful requests answered (digitserve_request_seconds' count), all endpoints;
    stage_counts / stages_ms: digitserve_stage_seconds per stage (requests that reached a
    batcher); server_latency_ms: arrival to answer; server_overhead_ms: that minus the four
    stages (None when some requests have no stages, e.g. /explain); unaccounted_ms: the
    client's mean minus the server's, i.e. the network, the HTTP/gRPC stack and the client.
    """
    by_endpoint = _delta(before.requests, after.requests, model, version)
    stages = _delta(before.stages, after.stages, model, version)
    requests = sum(count for _, count in by_endpoint.values())
    server_s = sum(total for total, _ in by_endpoint.values())
    server_ms = server_s / requests * 1000 if requests else None
    stages_ms = {
        stage: stages[stage][0] / stages[stage][1] * 1000 if stage in stages else None
        for stage in STAGES
    }
    stage_counts = {stage: stages.get(stage, (0.0, 0))[1] for stage in STAGES}
    overhead_ms = None
    if server_ms is not None and all(count == requests for count in stage_counts.values()):
        overhead_ms = server_ms - sum(v for v in stages_ms.values() if v is not None)
    return {
        "model": model,
        "version": version,
        "requests": requests,
        "requests_by_endpoint": {name: count for name, (_, count) in sorted(by_endpoint.items())},
        "stage_counts": stage_counts,
        "stages_ms": stages_ms,
        "server_latency_ms": server_ms,
        "server_overhead_ms": overhead_ms,
        "client_latency_ms": {"p50": client_p50_ms, "p99": client_p99_ms, "mean": client_mean_ms},
        "unaccounted_ms": None if server_ms is None else client_mean_ms - server_ms,
    }


def _us(ms: float | None) -> str:
    return "n/a" if ms is None else f"{ms * 1000:,.0f} us"


def format_split(server: dict[str, Any]) -> list[str]:
    """The split as perf_analyzer prints it, in microseconds: three lines of at most ~100."""
    stages = server["stages_ms"]
    client = server["client_latency_ms"]
    overhead = server.get("server_overhead_ms")
    return [
        f"server      {server['model']} {server['version']}: {server['requests']:,} requests "
        "answered (/metrics, before vs after)",
        f"  Server: queue {_us(stages['queue'])}, compute input {_us(stages['compute_input'])}, "
        f"compute infer {_us(stages['compute_infer'])}, "
        f"compute output {_us(stages['compute_output'])}",
        f"          request {_us(server['server_latency_ms'])}"
        + ("" if overhead is None else f" (overhead {_us(overhead)})"),
        f"  Client: avg {_us(client['mean'])} (p50 {_us(client['p50'])}, p99 {_us(client['p99'])})"
        f"; network+server overhead {_us(server['unaccounted_ms'])}",
    ]
