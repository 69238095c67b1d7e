"""`hybrid-inference prefill`: the prefill worker (gRPC PrefillWorker service, Prometheus /metrics)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from hybrid_workers.enums import TransferMode, WireEncoding
from hybrid_workers.errors import UserError
from hybrid_workers.kv.frames import check_chunk_bytes
from hybrid_workers.options import (
    add_model_options,
    add_option,
    add_served_model_name,
    parse_bytes,
    served_name,
)
from hybrid_workers.prefill.config import PrefillServerConfig

DEFAULTS = PrefillServerConfig()  # the flags' defaults


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `prefill` command."""
    parser = subparsers.add_parser(
        "prefill",
        help="run a prefill worker (gRPC): computes prompts, streams their KV cache layer by layer",
        description="Loads the model once and serves the PrefillWorker gRPC service (docs/kv-wire.md). "
        "Prefills run one at a time; each layer's KV leaves while the next layer computes.",
    )
    add_option(parser, "--host", default=DEFAULTS.host, help="interface to listen on")
    add_option(parser, "--port", default=DEFAULTS.port, type=int, help="gRPC port")
    add_option(
        parser, "--chunk-bytes", default=DEFAULTS.chunk_bytes, help="default KV chunk size, 64KiB..16MiB"
    )
    add_option(
        parser,
        "--mode",
        default=DEFAULTS.mode,
        choices=TransferMode,
        help="send mode for requests that name none (decode workers name their --kv-transfer-mode)",
    )
    add_option(
        parser, "--encoding", default=DEFAULTS.encoding, choices=WireEncoding, help="default KV wire encoding"
    )
    add_option(parser, "--max-queue", default=DEFAULTS.max_queue, type=int, help="prefills queued or running")
    add_option(
        parser,
        "--pipe-layers",
        default=DEFAULTS.pipe_layers,
        type=int,
        help="layers buffered ahead of the network",
    )
    add_option(
        parser, "--metrics-port", default=DEFAULTS.metrics_port, type=int, help="Prometheus /metrics; 0: off"
    )
    add_option(
        parser,
        "--kv-data-port",
        default="auto",  # DEFAULTS.data_port 0: any free port
        help="TCP port of the KV data connection (layers' bytes beside the gRPC stream, docs/kv-wire.md): "
        "auto: any free port (the handshake tells decode workers); a number: that port (expose it "
        "like --port); 0: off, layers travel as gRPC frames",
    )
    add_option(
        parser,
        "--kv-data-host",
        default="",
        help="address decode workers reach this worker's KV data port at, sent in each transfer's header "
        "(behind a Service with several replicas: the pod's IP); empty: the host they dialled",
    )
    add_option(
        parser,
        "--compute-cpus",
        default="",
        help="pin the prefill compute thread to these CPUs, e.g. 0 or 0-3,8 (Linux); the gRPC and data "
        "connection threads keep the other allowed CPUs; empty: no pinning",
    )
    add_option(parser, "--tls-cert", default=None, help="server certificate (PEM); with --tls-key: TLS")
    add_option(parser, "--tls-key", default=None, help="server private key (PEM)")
    add_option(parser, "--tls-ca", default=None, help="CA (PEM) that client certificates must chain to: mTLS")
    add_model_options(parser)
    add_served_model_name(parser)
    parser.set_defaults(func=run)


def _config(args: argparse.Namespace) -> PrefillServerConfig:
    from hybrid_workers.kv.tls import TLSConfig

    return PrefillServerConfig(
        host=args.host,
        port=int(args.port),
        metrics_port=int(args.metrics_port),
        chunk_bytes=parse_bytes(args.chunk_bytes, "--chunk-bytes", check=check_chunk_bytes) or 0,
        mode=TransferMode(args.mode),
        encoding=WireEncoding(args.encoding),
        max_queue=int(args.max_queue),
        pipe_layers=int(args.pipe_layers),
        tls=TLSConfig.from_flags(args.tls_cert, args.tls_key, args.tls_ca),
        served_model_name=args.served_model_name or served_name(args.model),
        data_port=_data_port(args.kv_data_port),
        data_host=args.kv_data_host,
        compute_cpus=_cpus(args.compute_cpus),
    )


def _data_port(text: str) -> int | None:
    """--kv-data-port: auto -> 0 (any free port), 0 -> None (off), else the port."""
    if text.strip() == "auto":
        return 0
    try:
        port = int(text)
    except ValueError:
        raise UserError(f"--kv-data-port {text!r}: use auto, a port 1-65535, or 0 (off)") from None
    if not 0 <= port <= 65535:
        raise UserError(f"--kv-data-port {port}: not a TCP port; use auto, 1-65535, or 0 (off)")
    return port or None


def _cpus(text: str) -> tuple[int, ...]:
    """--compute-cpus `0-3,8` -> (0, 1, 2, 3, 8); empty -> ()."""
    cpus: list[int] = []
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            low, _, high = part.partition("-")
            cpus.extend(range(int(low), int(high or low) + 1))
    except ValueError:
        raise UserError(f"--compute-cpus {text!r}: use CPU numbers and ranges, e.g. 0 or 0-3,8") from None
    if any(cpu < 0 for cpu in cpus):
        raise UserError(f"--compute-cpus {text!r}: CPU numbers start at 0")
    return tuple(sorted(set(cpus)))


def run(args: argparse.Namespace) -> int:
    """Load the model, serve until SIGTERM/SIGINT, then stop gracefully."""
    config = _config(args)  # flags first: a typo should not wait for the model to load
    from prometheus_client import start_http_server

    from hybrid_workers.engine import load_model
    from hybrid_workers.prefill.server import start_server

    lm = load_model(args.model, device=str(args.device), dtype=str(args.dtype))
    running = start_server(lm, config)
    if config.metrics_port:
        try:
            start_http_server(config.metrics_port, addr=args.host)
        except OSError as exc:
            running.stop(grace_s=0)
            raise UserError(
                f"--metrics-port {args.metrics_port}: cannot listen ({exc}); pick a free port"
            ) from None
    scheme = "plaintext" if config.tls is None else ("mTLS" if config.tls.ca else "TLS")
    data = f"KV data port {running.data_port}" if running.data_port else "KV data port off"
    print(
        f"prefill worker: {lm.name} ({lm.dtype}, {lm.device}, {lm.num_layers} layers) on "
        f"{config.host}:{running.port} ({scheme}; {data}; {config.mode} when a request names no mode, "
        f"decode workers name theirs: --kv-transfer-mode); "
        f"metrics on :{args.metrics_port or 'off'}",
        flush=True,
    )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    print("prefill worker: stopping", file=sys.stderr, flush=True)
    running.stop(grace_s=2.0)
    return 0
