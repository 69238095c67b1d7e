"""Start the prefill worker's gRPC server (message limits sized to the chunk size, optional TLS/mTLS)
and its KV data port."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from hybrid_workers.engine import LoadedModel
from hybrid_workers.errors import UserError
from hybrid_workers.kv.keepalive import SERVER_OPTIONS
from hybrid_workers.kv.tls import server_credentials
from hybrid_workers.prefill.config import PrefillServerConfig
from hybrid_workers.prefill.data_listener import DataListener
from hybrid_workers.prefill.servicer import SERVICE_NAME, PrefillServicer, add_to_server


@dataclass
class RunningServer:
    """A started server; `port` is the bound one (useful with port 0)."""

    server: grpc.Server
    servicer: PrefillServicer
    port: int
    health: health.HealthServicer

    @property
    def data_port(self) -> int | None:
        """The bound KV data port; None when the data connection is off."""
        return self.servicer.data.port if self.servicer.data is not None else None

    def stop(self, grace_s: float = 1.0) -> None:
        """Report NOT_SERVING, stop accepting, cancel streams after `grace_s`, stop the compute lane."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace_s).wait()
        self.servicer.close()
        if self.servicer.data is not None:
            self.servicer.data.close()


def start_server(lm: LoadedModel, config: PrefillServerConfig) -> RunningServer:
    """Bind and start the PrefillWorker service for `lm`; UserError when the address cannot be bound."""
    _split_cpus(config.compute_cpus)
    data = None if config.data_port is None else DataListener(config.host, config.data_port, config.tls)
    servicer = PrefillServicer(lm, config, data)
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
        if data is not None:
            data.close()
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


def _split_cpus(compute: tuple[int, ...]) -> None:
    """With --compute-cpus: this thread, and so every thread started from now on (gRPC, data connection),
    runs on the other allowed CPUs; the compute lane pins itself to `compute` when it starts."""
    if not compute or not hasattr(os, "sched_setaffinity"):
        return
    allowed = os.sched_getaffinity(0)
    if not set(compute) <= allowed:
        raise UserError(
            f"--compute-cpus {','.join(map(str, compute))}: this process may use CPUs "
            f"{','.join(map(str, sorted(allowed)))} only"
        )
    others = allowed - set(compute)
    if others:
        os.sched_setaffinity(0, others)
