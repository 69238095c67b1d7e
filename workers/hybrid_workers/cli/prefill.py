"""`hybrid-inference prefill`: the prefill worker (gRPC PrefillWorker service, Prometheus /metrics)."""

from __future__ import annotations

import argparse
import re
import signal
import sys
import threading

from hybrid_workers.enums import TransferMode
from hybrid_workers.errors import UserError
from hybrid_workers.options import add_model_options, add_option

_UNITS = {"": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20}


def parse_bytes(text: str) -> int:
    """`4194304`, `4MiB`, `512KiB` -> bytes; UserError naming the value otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", str(text))
    if not match or match.group(2).lower() not in _UNITS:
        raise UserError(f"--chunk-bytes {text!r}: give bytes, e.g. 4194304, 4MiB or 512KiB")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `prefill` command."""
    parser = subparsers.add_parser(
        "prefill",
        help="run a prefill worker (gRPC): computes prompts, streams their KV cache layer by layer",
        description="Loads the model once and serves the PrefillWorker gRPC service (docs/kv-wire.md). "
        "Prefills run one at a time; each layer's KV leaves while the next layer computes.",
    )
    add_option(parser, "--host", default="0.0.0.0", help="interface to listen on")
    add_option(parser, "--port", default=50051, type=int, help="gRPC port")
    add_option(parser, "--chunk-bytes", default="4MiB", help="default KV frame size, 64KiB..16MiB")
    add_option(
        parser, "--mode", default=TransferMode.LAYERWISE, choices=TransferMode, help="default send mode"
    )
    add_option(parser, "--max-queue", default=16, type=int, help="prefills queued or running at most")
    add_option(parser, "--metrics-port", default=9090, type=int, help="Prometheus /metrics port; 0 = off")
    add_option(parser, "--tls-cert", default=None, help="server certificate (PEM); with --tls-key: TLS")
    add_option(parser, "--tls-key", default=None, help="server private key (PEM)")
    add_option(parser, "--tls-ca", default=None, help="CA (PEM) that client certificates must chain to: mTLS")
    add_model_options(parser)
    parser.set_defaults(func=run)


def _config(args: argparse.Namespace):  # -> PrefillServerConfig
    from hybrid_workers.kv.frames import check_chunk_bytes
    from hybrid_workers.kv.tls import TLSConfig
    from hybrid_workers.prefill.server import PrefillServerConfig

    try:
        chunk_bytes = check_chunk_bytes(parse_bytes(args.chunk_bytes))
    except ValueError as exc:
        raise UserError(f"--chunk-bytes {args.chunk_bytes}: {exc}") from None
    if int(args.max_queue) < 1:
        raise UserError(f"--max-queue {args.max_queue}: must be at least 1")
    return PrefillServerConfig(
        host=args.host,
        port=int(args.port),
        chunk_bytes=chunk_bytes,
        mode=TransferMode(args.mode),
        max_queue=int(args.max_queue),
        tls=TLSConfig.from_flags(args.tls_cert, args.tls_key, args.tls_ca),
    )


def run(args: argparse.Namespace) -> int:
    """Load the model, serve until SIGTERM/SIGINT, then stop gracefully."""
    config = _config(args)  # flags first: a typo should not wait for the model to load
    from prometheus_client import start_http_server

    from hybrid_workers.engine import load_model
    from hybrid_workers.prefill.server import start_server

    lm = load_model(args.model, device=str(args.device), dtype=str(args.dtype))
    running = start_server(lm, config)
    if int(args.metrics_port):
        try:
            start_http_server(int(args.metrics_port), addr=args.host)
        except OSError as exc:
            running.stop(grace_s=0)
            raise UserError(
                f"--metrics-port {args.metrics_port}: cannot listen ({exc}); pick a free port"
            ) from None
    scheme = "plaintext" if config.tls is None else ("mTLS" if config.tls.ca else "TLS")
    print(
        f"prefill worker: {lm.name} ({lm.dtype}, {lm.device}, {lm.num_layers} layers) on "
        f"{config.host}:{running.port} ({scheme}, {config.mode} by default); "
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
