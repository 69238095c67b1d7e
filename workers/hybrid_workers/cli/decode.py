"""`hybrid-inference decode`: the decode worker (OpenAI-compatible HTTP API + client of a prefill worker)."""

from __future__ import annotations

import argparse
import dataclasses
import logging

from hybrid_workers.decode.config import DecodeConfig
from hybrid_workers.enums import DataChecksum, Engine, Fallback, LogLevel, TransferMode, WireEncoding
from hybrid_workers.errors import UserError
from hybrid_workers.options import (
    above_zero,
    add_model_options,
    add_option,
    add_served_model_name,
    apply_log_level,
    parse_bytes,
    served_name,
)

# The flags' defaults are DecodeConfig's (fields without a default, such as the model name, are absent).
DEFAULTS = {
    f.name: f.default for f in dataclasses.fields(DecodeConfig) if f.default is not dataclasses.MISSING
}
DEFAULT_PORT = 8000
# On SIGTERM/Ctrl-C, open streams get this long to finish before they are cut.
SHUTDOWN_GRACE_S = 5
STARTUP_FAILURE = 3


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `decode` command."""
    parser = subparsers.add_parser(
        "decode",
        help="run the decode worker: OpenAI-compatible HTTP API, remote prefill over gRPC",
        description="Serves /v1/completions and /v1/chat/completions. Prompts with at least "
        "--remote-prefill-min-tokens tokens are prefilled on the prefill worker at --prefill, whose KV "
        "cache streams back layer by layer; shorter prompts (or all, without --prefill) prefill here.",
    )
    add_model_options(parser)
    add_option(
        parser,
        "--engine",
        default=Engine.AUTO,
        choices=Engine,
        help="decode engine: torch, mlx (the [mlx] extra), or auto (mlx on Apple silicon when installed)",
    )
    add_option(
        parser, "--prefill", default=None, help="HOST:PORT of the prefill worker; none: prefill locally"
    )
    add_option(parser, "--host", default="127.0.0.1", help="address to listen on (0.0.0.0 in a pod)")
    add_option(parser, "--port", default=DEFAULT_PORT, type=int, help="HTTP port")
    add_served_model_name(parser)
    add_option(
        parser,
        "--remote-prefill-min-tokens",
        default=DEFAULTS["remote_prefill_min_tokens"],
        help="shorter prompts prefill locally (or auto)",
    )
    add_option(
        parser, "--fallback", default=DEFAULTS["fallback"], choices=Fallback, help="when remote prefill fails"
    )
    add_option(
        parser,
        "--prefill-timeout",
        default=DEFAULTS["prefill_timeout_s"],
        type=float,
        help="seconds for one remote prefill",
    )
    add_option(
        parser,
        "--read-timeout",
        default=30.0,
        type=float,
        help="seconds a client has to send a request's head, then its body (stalled ones are closed)",
    )
    add_option(
        parser,
        "--prefill-stall-timeout",
        default=5.0,
        type=float,
        help="seconds without a frame (the prefill worker sends heartbeats) before a transfer counts as "
        "stalled: the request falls back and the breaker opens",
    )
    add_option(
        parser,
        "--prefill-probe-interval",
        default=2.0,
        type=float,
        help="seconds between health + handshake probes of a ready prefill worker (an unready one is "
        "probed every 0.1-1 s)",
    )
    add_option(
        parser,
        "--max-concurrency",
        default="auto",
        help="requests running at once = the largest decode batch (auto: 8 on CPU, 64 on CUDA, 32 on MPS)",
    )
    add_option(
        parser,
        "--kv-cache-bytes",
        default="auto",
        help="KV memory for all running sequences, e.g. 4G (auto: half the free RAM, 90%% of free GPU "
        "memory); a request reserves prompt + max_tokens positions and waits in FIFO order until it fits",
    )
    add_option(
        parser,
        "--prefill-chunk-tokens",
        default=DEFAULTS["prefill_chunk_tokens"],
        type=int,
        help="local prefill runs in chunks of this many tokens between decode steps (bounds the ITL)",
    )
    add_option(
        parser, "--max-queue", default=DEFAULTS["max_queue"], type=int, help="requests waiting; then 429"
    )
    add_option(parser, "--max-model-len", default=None, type=int, help="prompt + completion tokens at most")
    add_option(
        parser,
        "--kv-compression",
        default=DEFAULTS["kv_compression"],
        choices=WireEncoding,
        help="KV wire format",
    )
    add_option(
        parser,
        "--kv-transfer-mode",
        default=DEFAULTS["kv_transfer_mode"],
        choices=TransferMode,
        help="KV send mode asked of the prefill worker: layerwise (each layer leaves while the next "
        "computes) or bulk (all layers after the prefill)",
    )
    add_option(
        parser,
        "--kv-data-checksum",
        default=DEFAULTS["kv_data_checksum"],
        choices=DataChecksum,
        help="checksum (CRC-32; CRC-32C with older peers) of each layer on the KV data connection: auto "
        "(on for plaintext; off under TLS, whose record MAC already authenticates every byte), on, or off "
        "(a trusted link)",
    )
    add_option(
        parser,
        "--prefill-data-port",
        default=None,
        type=int,
        help="port of the prefill worker's KV data connection at the --prefill host, as a NAT or NodePort "
        "maps it (the address the prefill announces is then ignored); default: the announced address "
        "(docs/kv-wire.md)",
    )
    add_option(
        parser, "--tls-cert", default=None, help="client certificate (PEM) for mTLS to the prefill worker"
    )
    add_option(parser, "--tls-key", default=None, help="client key (PEM) for mTLS")
    add_option(parser, "--tls-ca", default=None, help="CA (PEM) that signed the prefill worker's certificate")
    add_option(parser, "--predicted-ttft-seconds", default=None, type=float, help="planner's TTFT (a gauge)")
    add_option(
        parser,
        "--predicted-decode-tokens-per-second",
        default=None,
        type=float,
        help="planner's TPS (a gauge)",
    )
    add_option(parser, "--log-level", default=LogLevel.INFO, choices=LogLevel, help="log detail")
    parser.set_defaults(func=run)


def build_config(args: argparse.Namespace):  # -> DecodeConfig
    """The DecodeConfig for the parsed flags (UserError for bad values)."""
    from hybrid_workers.decode.config import parse_auto_int, parse_min_tokens
    from hybrid_workers.kv.tls import TLSConfig

    return DecodeConfig(
        served_model_name=args.served_model_name or served_name(args.model),
        prefill=args.prefill or None,
        remote_prefill_min_tokens=parse_min_tokens(args.remote_prefill_min_tokens),
        fallback=args.fallback,
        prefill_timeout_s=args.prefill_timeout,
        read_timeout_s=args.read_timeout,
        prefill_stall_s=args.prefill_stall_timeout,
        probe_interval_s=args.prefill_probe_interval,
        max_concurrency=parse_auto_int(args.max_concurrency, "--max-concurrency"),
        kv_cache_bytes=parse_bytes(args.kv_cache_bytes, "--kv-cache-bytes", auto=True, check=above_zero),
        prefill_chunk_tokens=args.prefill_chunk_tokens,
        max_queue=args.max_queue,
        max_model_len=args.max_model_len,
        kv_compression=args.kv_compression,
        kv_transfer_mode=args.kv_transfer_mode,
        prefill_data_port=args.prefill_data_port,
        kv_data_checksum=args.kv_data_checksum,
        tls=TLSConfig.from_flags(args.tls_cert, args.tls_key, args.tls_ca),
        predicted_ttft_s=args.predicted_ttft_seconds,
        predicted_decode_tps=args.predicted_decode_tokens_per_second,
    )


def run(args: argparse.Namespace) -> int:
    """Load the model, connect the prefill client, serve HTTP until interrupted."""
    import uvicorn

    from hybrid_workers.decode.app import create_app
    from hybrid_workers.decode.engines import compute_device, load_decode_model, resolve_engine
    from hybrid_workers.decode.http_server import server_config
    from hybrid_workers.decode.worker import DecodeWorker

    if not 0 < args.port < 65536:
        raise UserError(f"--port {args.port}: must be in 1..65535")
    config = build_config(args)
    engine = resolve_engine(args.engine)
    apply_log_level(args.log_level, "hybrid_inference", "decode")
    lm = load_decode_model(engine, args.model, device=args.device, dtype=args.dtype)
    peer = _prefill_client(config, lm)
    worker = DecodeWorker(lm, config, peer)
    logging.getLogger("hybrid_inference.decode").info(
        "serving %s on http://%s:%d (prefill: %s; engine %s on %s)",
        config.served_model_name,
        args.host,
        args.port,
        config.prefill or "local only",
        engine.value,
        compute_device(lm).value,
    )
    server = uvicorn.Server(
        server_config(
            create_app(worker),
            args.host,
            args.port,
            config.read_timeout_s,
            log_level=args.log_level,
            timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
        )
    )
    try:
        server.run()
        if not server.started:  # could not bind (uvicorn logged why); uvicorn.run's exit code
            return STARTUP_FAILURE
    finally:
        worker.close()
        if peer is not None:
            peer.close()
    return 0


def _prefill_client(config, lm):  # -> PrefillClient | None
    if config.prefill is None:
        return None
    from hybrid_workers.decode.prefill_client import PrefillClient

    return PrefillClient(
        config.prefill,
        lm,
        tls=config.tls,
        timeout_s=config.prefill_timeout_s,
        stall_s=config.prefill_stall_s,
        encoding=config.kv_compression,
        mode=config.kv_transfer_mode,
        data_port=config.prefill_data_port,
        data_checksum=config.kv_data_checksum,
    )
