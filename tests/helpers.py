"""Test helpers shared by the tiers: real digit images as PNG bytes, offline predictions, and a
real server process on a free loopback port."""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import psutil
import pytest

from modelrepo.layout import list_versions, open_version
from modelrepo.preprocess import image_to_pixels, pixels_to_image, pixels_to_input

ROOT = Path(__file__).resolve().parents[1]
EXPORTS = ROOT / "exports"


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    pixels_to_image(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def digits_test_pngs() -> tuple[list[bytes], np.ndarray]:
    """The bundled digits' whole test split as PNG files, and their labels."""
    from training.data import load_dataset

    data = load_dataset("digits")
    return [png_bytes(p) for p in data.test_images], data.test_labels


def offline_probabilities(name: str, pngs: list[bytes]) -> np.ndarray:
    """What onnxruntime answers for these PNG bytes with the manifest's preprocessing, no server."""
    from PIL import Image

    version = open_version(EXPORTS, name, list_versions(EXPORTS, name)[-1])
    spec = version.manifest.image_preprocessing
    pixels = []
    for data in pngs:
        with Image.open(io.BytesIO(data)) as image:
            pixels.append(image_to_pixels(image, spec))
    session = ort.InferenceSession(str(version.model_path), providers=["CPUExecutionProvider"])
    logits = session.run(
        None, {version.manifest.input.name: pixels_to_input(np.stack(pixels), spec)}
    )[0]
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)


def required_tool(name: str, debian_package: str = "prometheus") -> str:
    """The path of a command-line tool the tests need: missing in CI is a failure (.ci/run
    installs it), missing on a developer's machine a skip that says what to install."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is missing in CI: .ci/run must install Debian's {debian_package}")
        pytest.skip(f"{name} is not installed (apt-get install {debian_package})")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    grpc_target: str | None = None  # host:port of its gRPC listener, when it has one

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def histogram(self, name: str) -> dict[float, float]:
        """The cumulative bucket counts of histogram `name` (upper bound -> count), summed over
        every series and worker."""
        counts: dict[float, float] = {}
        for line in httpx.get(f"{self.url}/metrics", timeout=10).text.splitlines():
            if line.startswith(name + "_bucket{"):
                le = float(line.split('le="', 1)[1].split('"', 1)[0])
                counts[le] = counts.get(le, 0.0) + float(line.rsplit(" ", 1)[1])
        return counts


def shares_within(before: dict[float, float], after: dict[float, float]) -> dict[float, float]:
    """Of the observations made between two `Server.histogram` readings, the share at or below
    each bucket's upper bound."""
    total = after.get(float("inf"), 0.0) - before.get(float("inf"), 0.0)
    if not total:
        return {}
    return {le: round((n - before.get(le, 0.0)) / total, 4) for le, n in sorted(after.items())}


@contextmanager
def running_server(
    log_path: Path,
    *args: str,
    env: dict[str, str] | None = None,
    ready_timeout_s: float = 90,
    command: list[str] | None = None,
    port: int | None = None,
) -> Iterator[Server]:
    """`python -m service` on a free loopback port (or `command`, listening on `port`), waited
    on via /readyz, stopped by its process group (only the processes this started)."""
    port = port or free_port()
    env = {**os.environ, **(env or {})}
    # Never Triton's 8001: the servers of two test runs would share it.
    env.setdefault("DIGITSERVE_GRPC_PORT", str(free_port()))
    grpc_port = int(env["DIGITSERVE_GRPC_PORT"])
    command = command or [
        sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port),
        "--grpc-port", str(grpc_port), *args,
    ]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    grpc_target = f"127.0.0.1:{grpc_port}" if grpc_port else None
    server = Server(f"http://127.0.0.1:{port}", process, log_path, grpc_target)
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}:\n{server.log()}")
            try:
                if httpx.get(f"{server.url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready after {ready_timeout_s} s:\n{server.log()}")
            time.sleep(0.2)
        yield server
    finally:
        stop_process_group(process)


def stop_process_group(process: subprocess.Popen[bytes], grace_s: float = 20) -> None:
    """SIGTERM the process group this started, SIGKILL it after `grace_s`, then kill by PID
    any of its descendants still alive: BentoML's workers run in sessions of their own, so a
    killed arbiter would leave them behind otherwise."""
    if process.poll() is not None:
        return
    try:
        descendants = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    _, alive = psutil.wait_procs(descendants, timeout=5)
    for leftover in alive:
        leftover.kill()
