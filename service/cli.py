"""`python -m service`: check the settings and the model repository, then run `bentoml serve`
and drain it gracefully on SIGTERM."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from pydantic import ValidationError

from service.core.lifecycle import Roster
from service.settings import ENV_PREFIX, ServiceSettings

ROOT = Path(__file__).resolve().parents[1]
SERVICE = "service.bento:DigitServe"

# flag -> setting; a flag given on the command line overrides the environment.
FLAGS = {
    "model_repo": "--model-repo",
    "models": "--models",
    "default_model": "--default-model",
    "workers": "--workers",
    "ort_threads": "--ort-threads",
    "device": "--device",
    "max_batch_size": "--max-batch-size",
    "max_latency_ms": "--max-latency-ms",
    "grpc_port": "--grpc-port",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m service",
        description="Serve the ONNX model repository over HTTP (BentoML + onnxruntime). "
        f"Every setting can also be given as an environment variable {ENV_PREFIX}<NAME>.",
    )
    p.add_argument(
        "--host",
        default=os.environ.get(f"{ENV_PREFIX}HOST", "127.0.0.1"),
        help="address to listen on (default 127.0.0.1; 0.0.0.0 in containers)",
    )
    p.add_argument("--port", type=int, default=int(os.environ.get(f"{ENV_PREFIX}PORT", "3000")))
    p.add_argument("--model-repo", help="model repository folder (default exports)")
    p.add_argument("--models", help="comma-separated 'name' or 'name:version' (default: all)")
    p.add_argument("--default-model", help="model for requests that name none")
    p.add_argument("--workers", type=int, help="worker processes (default: CPU count)")
    p.add_argument("--ort-threads", type=int, help="onnxruntime threads per worker (default 1)")
    p.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        help="auto (default): CUDA if available; cuda: fail without a GPU",
    )
    p.add_argument("--max-batch-size", type=int, help="images per onnxruntime call (32)")
    p.add_argument("--max-latency-ms", type=int, help="adaptive batching budget (1000)")
    p.add_argument(
        "--grpc-port",
        type=int,
        help="gRPC port of the Open Inference Protocol (default 8001 as Triton; 0: off)",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="load every model once, print the resolved settings and exit",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault(f"{ENV_PREFIX}GRPC_HOST", args.host)  # gRPC listens where HTTP does
    for field, flag in FLAGS.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None:
            os.environ[f"{ENV_PREFIX}{field.upper()}"] = str(value)
    try:
        settings = ServiceSettings()
    except ValidationError as exc:
        for err in exc.errors():
            name = ENV_PREFIX + ".".join(str(p) for p in err["loc"]).upper()
            print(f"error: {name}: {err['msg']}", file=sys.stderr)
        return 2
    # Imported after the settings are known so `--help` answers without onnxruntime.
    from service.core.models import StartupError, load_registry

    try:
        # Load every model once here (sha256, onnxruntime, provider): a bad repository or a
        # GPU setting without a GPU stops start-up with one clear line, instead of BentoML
        # restarting workers that fail the same way.
        registry = load_registry(settings)
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"digitserve settings: {settings.model_dump_json()}", file=sys.stderr)
    for model in registry:
        print(
            f"digitserve model {model.key} provider={model.provider} "
            f"sha256={model.manifest.sha256}",
            file=sys.stderr,
        )
    if args.check:
        return 0
    if settings.grpc_port and not port_free(settings.grpc_host, settings.grpc_port):
        print(
            f"error: the gRPC port {settings.grpc_host}:{settings.grpc_port} is in use; "
            f"choose another with --grpc-port N, or turn gRPC off with --grpc-port 0",
            file=sys.stderr,
        )
        return 2
    runtime_dir = Path(tempfile.mkdtemp(prefix=f"digitserve-{args.port}-"))
    env = {
        **os.environ,
        **settings.to_env(),
        "BENTOML_DO_NOT_TRACK": "true",
        f"{ENV_PREFIX}RUNTIME_DIR": str(runtime_dir),
    }
    # BentoML keeps the workers' Prometheus files under BENTOML_HOME and empties that folder
    # at start, so two servers sharing the default ~/bentoml would wipe each other's metrics.
    env.setdefault("BENTOML_HOME", str(Path(tempfile.gettempdir()) / f"digitserve-{args.port}"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    command = [
        sys.executable,
        "-m",
        "bentoml",
        "serve",
        SERVICE,
        "--host",
        args.host,
        "--port",
        str(args.port),
        "--working-dir",
        str(ROOT),
        "--timeout-graceful-shutdown",
        str(settings.shutdown_timeout_s),
    ]
    grpc = f", gRPC on {settings.grpc_host}:{settings.grpc_port}" if settings.grpc_port else ""
    print(
        f"digitserve: listening on http://{args.host}:{args.port}{grpc}",
        file=sys.stderr,
        flush=True,
    )
    try:
        return supervise(command, env, Roster(runtime_dir, settings.workers), settings.drain_s)
    finally:
        shutil.rmtree(runtime_dir, ignore_errors=True)


def port_free(host: str, port: int) -> bool:
    """Whether a TCP port can be bound now (the workers bind it again, each with SO_REUSEPORT)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError:
        return False
    return True


def supervise(command: list[str], env: dict[str, str], roster: Roster, drain_s: float) -> int:
    """Run BentoML as a child and turn SIGTERM into a graceful drain: /readyz answers 503 for
    `drain_s` seconds while requests are still served (load balancers stop sending), then
    BentoML gets SIGTERM, finishes the requests in flight and exits. SIGINT (Ctrl-C) skips
    the drain."""
    child = subprocess.Popen(command, env=env)
    stopping = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        roster.start_draining()
        print(f"digitserve: SIGTERM, draining for {drain_s:g} s", file=sys.stderr, flush=True)
        threading.Thread(target=_stop_after, args=(child, drain_s), daemon=True).start()

    def on_int(signum: int, frame: object) -> None:
        roster.start_draining()
        if child.poll() is None:
            child.send_signal(signal.SIGINT)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_int)
    return child.wait()


def _stop_after(child: subprocess.Popen[bytes], delay_s: float) -> None:
    time.sleep(delay_s)
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
