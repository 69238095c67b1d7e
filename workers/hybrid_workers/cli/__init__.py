"""The `hybrid-inference` command: one subcommand per module in this package, imported lazily.

Each command module exposes `register(subparsers)`, which adds its parser and sets `func`, a callable
taking the parsed arguments and returning an exit status. Command modules import torch, gRPC or kopf
only inside `func`, so `plan` and `operator` work where torch is not installed.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from hybrid_workers import __version__
from hybrid_workers.errors import UserError

# Subcommand name -> module under hybrid_workers.cli that registers it (order = order in --help).
COMMANDS: dict[str, str] = {
    "serve": "serve",
    "prefill": "prefill",
    "decode": "decode",
    "generate": "generate",
    "demo-model": "demo_model",
    "plan": "plan",
    "calibrate": "calibrate",
    "bench": "bench",
    "operator": "operator_cmd",
    "agent": "agent",
}


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every command that is installed in this tree."""
    parser = argparse.ArgumentParser(
        prog="hybrid-inference",
        description="Disaggregated LLM inference: prefill where compute is, decode where bandwidth is.",
    )
    parser.add_argument("--version", action="version", version=f"hybrid-inference {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMANDS.values():
        try:
            module = importlib.import_module(f"hybrid_workers.cli.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"hybrid_workers.cli.{module_name}":
                raise
            continue  # command not built yet in this tree
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a bad flag argparse already explained in one line
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"hybrid-inference {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
