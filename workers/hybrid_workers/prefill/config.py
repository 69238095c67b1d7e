"""The prefill worker's configuration: one frozen dataclass, validated on construction (CLI defaults)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from hybrid_workers.enums import TransferMode, WireEncoding
from hybrid_workers.errors import UserError
from hybrid_workers.kv.frames import DEFAULT_CHUNK_BYTES, check_chunk_bytes

if TYPE_CHECKING:
    from hybrid_workers.kv.tls import TLSConfig  # (imports grpc: not needed to build the CLI)


@dataclass(frozen=True)
class PrefillServerConfig:
    """Everything the prefill worker needs besides the loaded model; `hybrid-inference prefill` takes
    its defaults from here."""

    host: str = "0.0.0.0"  # interface to listen on
    port: int = 50051  # gRPC port; 0: any free port (tests)
    metrics_port: int = 9090  # Prometheus /metrics; 0: off
    chunk_bytes: int = DEFAULT_CHUNK_BYTES  # default size of a layer chunk (a request may ask for another)
    mode: TransferMode = TransferMode.LAYERWISE  # default when a request does not say
    encoding: WireEncoding = WireEncoding.NONE  # default when a request does not say
    max_queue: int = 16  # prefills queued or running at once; beyond it: RESOURCE_EXHAUSTED
    pipe_layers: int = 3  # layerwise: finished layers buffered ahead of the network at most
    tls: TLSConfig | None = None  # None: plaintext
    rpc_threads: int = 8  # concurrent RPCs (streams); prefills still run one at a time
    served_model_name: str = ""  # the metrics' `model` label (the decode worker's name); "": the model's
    data_port: int | None = 0  # KV data connection port (docs/kv-wire.md); 0: any free (auto); None: off
    data_host: str = ""  # address decode workers reach the data port at ("": the host they dialled)
    data_connect_timeout_s: float = 10.0  # a call's data connection must arrive within this
    compute_cpus: tuple[int, ...] = ()  # pin the compute lane thread to these CPUs (Linux); (): no pinning

    def __post_init__(self) -> None:
        try:
            check_chunk_bytes(self.chunk_bytes)
        except ValueError as exc:
            raise UserError(f"--chunk-bytes {self.chunk_bytes}: {exc}") from None
        for flag, value, low in (
            ("--port", self.port, 0),
            ("--metrics-port", self.metrics_port, 0),
            ("--max-queue", self.max_queue, 1),
            ("--pipe-layers", self.pipe_layers, 1),
        ):
            if value < low:
                raise UserError(f"{flag} {value}: must be at least {low}")
        if self.data_port is not None and not 0 <= self.data_port <= 65535:
            raise UserError(f"--kv-data-port {self.data_port}: not a TCP port; use 1-65535, or 0 for off")
        if self.data_connect_timeout_s <= 0:
            raise UserError(f"data connect timeout {self.data_connect_timeout_s}: must be positive")
        for flag, port in (("--port", self.port), ("--metrics-port", self.metrics_port)):
            if port > 65535:
                raise UserError(f"{flag} {port}: not a TCP port; use 1-65535 (0: see --help)")
