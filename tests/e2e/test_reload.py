"""Model repository reloads on real servers (2 workers): a new version is switched to under
load without one failed request, in every worker; a corrupt or mismatched version is refused
while the old ones keep serving, and not retried until its files change; DIGITSERVE_RELOAD_POLL_S
picks up new versions with no admin call; a corrupt repository stops start-up with one line."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import EXPORTS, ROOT, Server, free_port, running_server
from tests.loadgen import Outcome, closed_loop

ADMIN_KEY = "reload-admin-key-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
MODEL = "digits-cnn"
SOURCE = EXPORTS / MODEL / "1"
SEVEN = (ROOT / "examples" / "digits" / "7.png").read_bytes()
WORKERS = 2
SWITCH_TIMEOUT_S = 10.0


def publish(
    repo: Path,
    version: int,
    *,
    onnx: Path = SOURCE / "model.onnx",
    edit_onnx: Callable[[bytearray], None] | None = None,
    rehash: bool = False,
) -> Path:
    """Publish `MODEL` version `version` as an operator would: a copy of the bundled version
    with its manifest saying `version`, written beside the target and renamed into place, so the
    server never sees half a version. `edit_onnx` changes the graph's bytes after the manifest's
    sha256 is taken (a corrupt file) unless `rehash` records the new file's sha256."""
    model_dir = repo / MODEL
    staging = model_dir / f".staging-{version}"
    shutil.copytree(SOURCE, staging)
    data = bytearray(onnx.read_bytes())
    if edit_onnx is not None:
        edit_onnx(data)
    (staging / "model.onnx").write_bytes(bytes(data))
    manifest = json.loads((staging / "model.json").read_text())
    manifest["version"] = version
    if rehash:
        manifest["sha256"] = hashlib.sha256(data).hexdigest()
    (staging / "model.json").write_text(json.dumps(manifest, indent=2))
    staging.rename(model_dir / str(version))  # one rename(2): all of it or none
    return model_dir / str(version)


def flip_middle_byte(data: bytearray) -> None:
    data[len(data) // 2] ^= 0xFF


def predict(url: str, timeout: float = 30) -> dict[str, Any]:
    files = {"image": ("7.png", SEVEN, "image/png")}
    # A new connection per request: BentoML's workers share the listening socket, so fresh
    # connections reach both of them.
    r = httpx.post(f"{url}/predict", files=files, timeout=timeout)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert body["model"] == MODEL and body["predictions"][0]["label"] == "7"
    return body


def versions_answered(url: str, n: int = 20) -> Counter[int]:
    return Counter(predict(url)["version"] for _ in range(n))


def reloads(url: str) -> dict[str, float]:
    return reloads_in(httpx.get(f"{url}/metrics", timeout=10).text)


def reloads_in(text: str) -> dict[str, float]:
    """digitserve_reloads_total by outcome, summed over the workers."""
    totals: dict[str, float] = {}
    for outcome, value in re.findall(
        r'^digitserve_reloads_total\{outcome="(\w+)"\} (\S+)$', text, re.MULTILINE
    ):
        totals[outcome] = totals.get(outcome, 0.0) + float(value)
    return totals


def wait_for_reloads(url: str, outcome: str, count: int, timeout_s: float) -> float:
    """Seconds until `count` reloads with `outcome` were counted, over all workers."""
    start = time.monotonic()
    while reloads(url).get(outcome, 0) < count:
        assert time.monotonic() - start < timeout_s, f"{outcome} reloads: {reloads(url)}"
        time.sleep(0.1)
    return time.monotonic() - start


def admin_reload(url: str) -> dict[str, Any]:
    r = httpx.post(f"{url}/admin/reload", headers=ADMIN, timeout=60)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def new_repo(path: Path) -> Path:
    shutil.copytree(SOURCE, path / MODEL / "1")
    return path


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return new_repo(tmp_path_factory.mktemp("repo"))


@pytest.fixture(scope="module")
def server(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("reload-server") / "server.log"
    env = {"DIGITSERVE_ADMIN_API_KEY": ADMIN_KEY, "DIGITSERVE_RELOAD_POLL_S": "0"}
    with running_server(log, "--model-repo", str(repo), "--workers", str(WORKERS), env=env) as srv:
        yield srv


@dataclass
class HotReload:
    outcomes: list[Outcome]
    response: dict[str, Any]
    reload_at: float  # time.monotonic() when the POST was sent
    reload_s: float  # the POST's round trip: load, check, warm and switch in one worker
    others_s: float  # from its answer until every worker had switched
    answered: Counter[int]  # versions in 20 predictions once every worker switched


@pytest.fixture(scope="module")
def hot_reload(server: Server, repo: Path) -> HotReload:
    """Version 2 published and reloaded while 8 clients send /predict back to back."""
    assert versions_answered(server.url, 6) == {1: 6}
    result: dict[str, Any] = {}

    async def during() -> None:
        await asyncio.sleep(1.5)
        publish(repo, 2)
        async with httpx.AsyncClient(timeout=60) as client:
            start = result["reload_at"] = time.monotonic()
            r = await client.post(f"{server.url}/admin/reload", headers=ADMIN)
            result["reload_s"] = time.monotonic() - start
            assert r.status_code == 200, r.text
            result["response"] = r.json()
            start = time.monotonic()
            while True:
                text = (await client.get(f"{server.url}/metrics")).text
                if reloads_in(text).get("ok", 0) >= WORKERS:
                    break
                assert time.monotonic() - start < SWITCH_TIMEOUT_S, "a worker did not reload"
                await asyncio.sleep(0.05)
            result["others_s"] = time.monotonic() - start

    outcomes = asyncio.run(
        closed_loop(f"{server.url}/predict", SEVEN, users=8, duration_s=8, during=during)
    )
    return HotReload(
        outcomes,
        result["response"],
        result["reload_at"],
        result["reload_s"],
        result["others_s"],
        versions_answered(server.url),
    )


def test_hot_reload_under_load_fails_no_request(hot_reload: HotReload) -> None:
    statuses = Counter(o.status for o in hot_reload.outcomes)
    print(
        f"\n{len(hot_reload.outcomes)} requests during the reload: {dict(statuses)}; "
        f"reload answered in {hot_reload.reload_s:.2f} s, every worker switched "
        f"{hot_reload.others_s:.2f} s later; then {dict(hot_reload.answered)}"
    )
    assert statuses == {200: len(hot_reload.outcomes)}, statuses
    before = sum(o.started < hot_reload.reload_at for o in hot_reload.outcomes)
    after = sum(o.started > hot_reload.reload_at + hot_reload.reload_s + hot_reload.others_s
                for o in hot_reload.outcomes)  # fmt: skip
    print(f"{before} sent before the reload, {after} after every worker switched")
    assert before > 50 and after > 50
    body = hot_reload.response
    assert body["loaded"] == [f"{MODEL}:2"] and body["failed"] == {}
    assert body["models"] == [f"{MODEL}:1", f"{MODEL}:2"]
    assert body["generation"] == 1


def test_every_worker_serves_the_new_version(server: Server, hot_reload: HotReload) -> None:
    assert hot_reload.others_s < SWITCH_TIMEOUT_S
    assert hot_reload.answered == {2: 20}
    for _ in range(4):
        assert httpx.get(f"{server.url}/readyz").json()["models"] == [f"{MODEL}:1", f"{MODEL}:2"]
    # The old version still answers when asked for.
    files = {"image": ("7.png", SEVEN, "image/png")}
    r = httpx.post(f"{server.url}/predict", files=files, data={"version": "1"})
    assert r.status_code == 200 and r.json()["version"] == 1


@pytest.fixture(scope="module")
def refused(server: Server, repo: Path, hot_reload: HotReload) -> dict[str, dict[str, Any]]:
    """Version 3 with a corrupt graph file, then version 4 with another model's graph under
    this model's manifest (its sha256 updated), each reloaded; every worker has refused each
    before the next step."""
    answers = {}
    publish(repo, 3, edit_onnx=flip_middle_byte)
    answers["corrupt"] = admin_reload(server.url)
    wait_for_reloads(server.url, "failed", WORKERS, SWITCH_TIMEOUT_S)
    text_graph = EXPORTS / "text-topics" / "1" / "model.onnx"  # int64 [batch, tokens] input
    publish(repo, 4, onnx=text_graph, rehash=True)
    answers["mismatched"] = admin_reload(server.url)
    wait_for_reloads(server.url, "failed", 2 * WORKERS, SWITCH_TIMEOUT_S)
    return answers


def test_a_corrupt_version_is_refused_and_the_others_keep_serving(
    server: Server, refused: dict[str, dict[str, Any]]
) -> None:
    body = refused["corrupt"]
    assert body["loaded"] == [] and list(body["failed"]) == [f"{MODEL}:3"]
    assert "sha256" in body["failed"][f"{MODEL}:3"]
    assert body["models"] == [f"{MODEL}:1", f"{MODEL}:2"]


def test_a_graph_that_does_not_match_its_manifest_is_refused(
    server: Server, refused: dict[str, dict[str, Any]]
) -> None:
    body = refused["mismatched"]
    # Version 3 is not tried again: its files have not changed.
    assert body["loaded"] == [] and list(body["failed"]) == [f"{MODEL}:4"]
    assert "shape" in body["failed"][f"{MODEL}:4"]
    assert body["models"] == [f"{MODEL}:1", f"{MODEL}:2"]


def test_after_refusals_every_worker_serves_the_last_good_version(
    server: Server, refused: dict[str, dict[str, Any]]
) -> None:
    assert versions_answered(server.url) == {2: 20}
    for _ in range(4):
        r = httpx.get(f"{server.url}/readyz", timeout=10)
        assert r.status_code == 200 and r.json()["models"] == [f"{MODEL}:1", f"{MODEL}:2"]
    models = httpx.get(f"{server.url}/models").json()["models"]
    assert [(m["name"], m["version"]) for m in models] == [(MODEL, 1), (MODEL, 2)]
    files = {"image": ("7.png", SEVEN, "image/png")}
    r = httpx.post(f"{server.url}/predict", files=files, data={"version": "3"})
    assert r.status_code == 404, r.text


def test_a_reload_with_no_changes_loads_and_refuses_nothing(
    server: Server, repo: Path, refused: dict[str, dict[str, Any]]
) -> None:
    for _ in range(4):  # fresh connections: both workers answer some
        body = admin_reload(server.url)
        assert body["loaded"] == [] and body["failed"] == {}, body
        assert body["models"] == [f"{MODEL}:1", f"{MODEL}:2"]
    # A refused version is tried again once its files change: repaired, it loads.
    shutil.copyfile(SOURCE / "model.onnx", repo / MODEL / "3" / "model.onnx")
    body = admin_reload(server.url)
    assert body["loaded"] == [f"{MODEL}:3"] and list(body["failed"]) == [], body
    assert body["models"] == [f"{MODEL}:1", f"{MODEL}:2", f"{MODEL}:3"]


# ---------------------------------------------------------------------------------------------
# Watching the repository, and start-up


def test_reload_poll_picks_up_a_new_version_without_an_admin_call(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "repo")
    env = {"DIGITSERVE_RELOAD_POLL_S": "1"}  # and no admin key: /admin is closed
    with running_server(
        tmp_path / "server.log", "--model-repo", str(repo), "--workers", str(WORKERS), env=env
    ) as srv:
        assert httpx.post(f"{srv.url}/admin/reload").status_code == 403
        assert versions_answered(srv.url, 6) == {1: 6}
        publish(repo, 2)
        start = time.monotonic()
        first = None
        streak = 0  # consecutive answers from version 2, over fresh connections
        while streak < 20:
            assert time.monotonic() - start < SWITCH_TIMEOUT_S, "version 2 never served"
            version = predict(srv.url)["version"]
            if version == 2 and first is None:
                first = time.monotonic() - start
            streak = streak + 1 if version == 2 else 0
            time.sleep(0.02)
        every = time.monotonic() - start
        print(f"\nreload poll 1 s: first answer from version 2 after {first:.2f} s, "
              f"20 in a row after {every:.2f} s")  # fmt: skip
        assert every < 6


def test_start_up_with_a_corrupt_version_fails_with_one_clear_line(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "repo")
    onnx = repo / MODEL / "1" / "model.onnx"
    data = bytearray(onnx.read_bytes())
    flip_middle_byte(data)
    onnx.write_bytes(bytes(data))
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port),
         "--model-repo", str(repo), "--workers", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "sha256" in lines[0]
    assert str(onnx) in lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""
    with pytest.raises(httpx.TransportError):  # nothing listens
        httpx.get(f"http://127.0.0.1:{port}/livez", timeout=2)
