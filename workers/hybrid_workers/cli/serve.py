"""`hybrid-inference serve`: a prefill worker and a decode worker on this machine, joined over loopback gRPC.

Both workers run as child processes of `serve` (see hybrid_workers.supervisor); the OpenAI-compatible
API is the decode worker's, on 127.0.0.1:8000 by default. Exit codes: supervisor.ExitCode.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hybrid_workers.enums import Device
from hybrid_workers.errors import UserError
from hybrid_workers.options import add_model_options, add_option
from hybrid_workers.restarts import DEFAULT_MAX_RESTARTS, DEFAULT_WINDOW_S
from hybrid_workers.serve_options import FORWARDED, LOOPBACK, choose_ports, positive_seconds


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `serve` command."""
    parser = subparsers.add_parser(
        "serve",
        help="run a prefill and a decode worker on this machine (OpenAI API on 127.0.0.1:8000)",
        description="Starts a prefill worker and a decode worker as two processes joined over loopback "
        "gRPC and serves the OpenAI-compatible API. A worker that crashes is restarted (see "
        "--max-restarts). Exit codes: 0 stopped on request, 2 bad input or port in use, 3 the prefill "
        "worker failed at start-up or crashed too often, 4 the same for the decode worker, 5 not ready "
        "in time.",
    )
    add_model_options(parser)
    for role in ("prefill", "decode"):
        flag, help_text = f"--{role}-device", f"device of the {role} worker; none: --device"
        add_option(parser, flag, default=None, choices=Device, help=help_text)
    add_option(parser, "--host", default=LOOPBACK, help="address the API listens on")
    add_option(parser, "--port", default=8000, type=int, help="port of the OpenAI-compatible API")
    add_option(parser, "--prefill-port", default=0, type=int, help="loopback gRPC port; 0: a free port")
    add_option(parser, "--prefill-metrics-port", default=0, type=int, help="prefill /metrics; 0: a free port")
    add_option(
        parser, "--ready-timeout", default=600.0, type=positive_seconds, help="seconds to wait for ready"
    )
    add_option(
        parser, "--stop-timeout", default=10.0, type=positive_seconds, help="seconds a worker gets to stop"
    )
    add_option(
        parser,
        "--max-restarts",
        default=DEFAULT_MAX_RESTARTS,
        type=int,
        help="restarts of a crashed worker allowed within --restart-window; one crash more and serve "
        "gives up (exit 3 or 4); 0: never restart",
    )
    add_option(
        parser,
        "--restart-window",
        default=DEFAULT_WINDOW_S,
        type=float,
        help="seconds a worker's crash counts against --max-restarts",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="relay every worker line (also HTTP access lines of successes)"
    )
    for flag, option in FORWARDED.items():
        help_text = f"{option.help} (passed to the {'/'.join(option.roles)} worker)"
        add_option(parser, flag, default=None, type=option.parse, choices=option.choices, help=help_text)
    for role in ("prefill", "decode"):
        parser.add_argument(
            f"--{role}-arg",
            action="append",
            default=[],
            metavar="ARG",
            help=f"extra argument for the {role} worker, e.g. --{role}-arg=--log-level=debug (repeatable)",
        )
    parser.set_defaults(func=run)


def resolve_model(model: str | None) -> str:
    """The model folder both workers load: --model, or the embedded model (converted here, once, for both)."""
    if model:
        looks_local = str(model).startswith(("/", "./", "../", "~"))  # a Hugging Face id is `org/name`
        if looks_local and not Path(model).expanduser().is_dir():
            raise UserError(f"--model {model}: no such folder; give a model folder or a Hugging Face id")
        return str(model)
    from hybrid_workers.engine.default_model import embedded_model_dir

    return str(embedded_model_dir())


def run(args: argparse.Namespace) -> int:
    """Start both workers, wait until the API is ready, relay their output until stopped (restarting a
    crashed worker) or until a worker crashed too often."""
    from hybrid_workers import serve_session

    if args.engine is not None:  # an MLX engine that is not installed fails before two workers load
        from hybrid_workers.decode.engines import resolve_engine

        resolve_engine(args.engine)
    serve_session.restart_policy(args)  # bad values fail before two workers start loading the model
    ports = choose_ports(args.host, args.port, args.prefill_port, args.prefill_metrics_port)
    model = resolve_model(args.model)
    return serve_session.supervise(args, model, ports)
