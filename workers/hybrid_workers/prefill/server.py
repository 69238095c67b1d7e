"""Start the prefill worker's gRPC server: message limits sized to the chunk size, optional TLS/mTLS."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from hybrid_workers.engine import LoadedModel
from hybrid_workers.errors import UserError
from hybrid_workers.kv.keepalive import SERVER_OPTIONS
from hybrid_workers.kv.tls import server_credentials
from hybrid_workers.prefill.config import PrefillServerConfig
from hybrid_workers.prefill.servicer import SERVICE_NAME, PrefillServicer, add_to_server


@dataclass
class RunningServer:
    """A started server; `port` is the bound one (useful with port 0)."""

    server: grpc.Server
    servicer: PrefillServicer
    port: int
    health: health.HealthServicer

    def stop(self, grace_s: float = 1.0) -> None:
        """Report NOT_SERVING, stop accepting, cancel streams after `grace_s`, stop the compute lane."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace_s).wait()
        self.servicer.close()


def start_server(lm: LoadedModel, config: PrefillServerConfig) -> RunningServer:
    """Bind and start the PrefillWorker service for `lm`; UserError when the address cannot be bound."""
    servicer = PrefillServicer(lm, config)
    server = grpc.server(ThreadPoolExecutor(max_workers=config.rpc_threads), options=SERVER_OPTIONS)
    add_to_server(servicer, server)
    health_servicer = _add_health(server)
    address = f"{config.host}:{config.port}"
    try:
        if config.tls is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, server_credentials(config.tls))
    except RuntimeError as exc:
        raise UserError(f"--host/--port {address}: cannot listen ({exc}); is the port in use?") from exc
    server.start()
    return RunningServer(server, servicer, port, health_servicer)


def _add_health(server: grpc.Server) -> health.HealthServicer:
    """The standard grpc.health.v1 service (Kubernetes gRPC probes): SERVING, since the model is
    already loaded when the server starts; NOT_SERVING once shutdown begins."""
    servicer = health.HealthServicer()
    for name in ("", SERVICE_NAME):  # what kubelet's gRPC probe and the decode worker ask about
        servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    return servicer
