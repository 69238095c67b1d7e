"""Start the prefill worker's gRPC server: message limits sized to the chunk size, optional TLS/mTLS."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from hybrid_workers.engine import LoadedModel
from hybrid_workers.enums import TransferMode, WireEncoding
from hybrid_workers.errors import UserError
from hybrid_workers.kv.frames import DEFAULT_CHUNK_BYTES, GRPC_OPTIONS
from hybrid_workers.kv.tls import TLSConfig, server_credentials
from hybrid_workers.prefill.servicer import PrefillServicer, ServiceOptions, add_to_server


@dataclass(frozen=True)
class PrefillServerConfig:
    """Everything the prefill worker needs besides the loaded model."""

    host: str = "0.0.0.0"  # interface to listen on
    port: int = 50051  # 0: any free port (tests)
    chunk_bytes: int = DEFAULT_CHUNK_BYTES  # default chunk size of the layer frames
    mode: TransferMode = TransferMode.LAYERWISE  # default when a request does not say
    encoding: WireEncoding = WireEncoding.NONE  # default when a request does not say
    max_queue: int = 16  # prefills queued or running at once
    tls: TLSConfig | None = None  # None: plaintext
    rpc_threads: int = 8  # concurrent RPCs (streams); prefills still run one at a time


# The name kubelet's gRPC probe and grpc_health_probe may ask about; "" (the whole server) works too.
HEALTH_SERVICE = "hybridinference.kv.v1.PrefillWorker"


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
    options = ServiceOptions(
        chunk_bytes=config.chunk_bytes, mode=config.mode, encoding=config.encoding, max_queue=config.max_queue
    )
    servicer = PrefillServicer(lm, options)
    server = grpc.server(ThreadPoolExecutor(max_workers=config.rpc_threads), options=GRPC_OPTIONS)
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
    for name in ("", HEALTH_SERVICE):
        servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    return servicer
