"""The worker's gRPC listener: a grpc.aio server in the worker's event loop (where the
batchers are), on the same port in every worker.

Each worker binds the port with SO_REUSEPORT (gRPC's default on Linux), as the HTTP listener
does (service/listener.py), so the kernel spreads connections across the workers. Messages are
limited to the HTTP upload limit. On shutdown it stops taking calls and lets those in flight
finish within the graceful-shutdown time.
"""

from __future__ import annotations

import logging

import grpc
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from service.core.dataplane import DataPlane
from service.grpc.servicer import InferenceServicer

log = logging.getLogger("digitserve")


class GrpcListener:
    """inference.GRPCInferenceService on `settings.grpc_host:grpc_port` for one worker."""

    name = "grpc"

    def __init__(self, plane: DataPlane, server_version: str) -> None:
        self.plane = plane
        self.server_version = server_version
        self.server: grpc.aio.Server | None = None
        self.serving = False

    @property
    def address(self) -> str:
        settings = self.plane.runtime.settings
        host = settings.grpc_host
        return f"[{host}]:{settings.grpc_port}" if ":" in host else f"{host}:{settings.grpc_port}"

    async def start(self) -> None:
        settings = self.plane.runtime.settings
        limit = settings.max_upload_bytes
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.so_reuseport", 1),
            ]
        )
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(
            InferenceServicer(self.plane, self.server_version), server
        )
        try:
            server.add_insecure_port(self.address)
        except RuntimeError as exc:  # grpc raises this when the port cannot be bound
            log.error("gRPC could not listen on %s: %s", self.address, exc)
            return
        await server.start()
        self.server, self.serving = server, True
        log.info("gRPC listening on %s", self.address)

    async def stop(self) -> None:
        if self.server is None:
            return
        self.serving = False
        await self.server.stop(grace=self.plane.runtime.settings.shutdown_timeout_s)
        self.server = None
