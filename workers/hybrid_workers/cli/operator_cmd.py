"""`hybrid-inference operator`: runs the kopf operator, i.e. `kopf run -m hybrid_operator` with our flags.

kopf is imported only inside `run`, so this module loads where kopf is not installed (worker images).
"""

from __future__ import annotations

import argparse
import os

from hybrid_workers.enums import env_name
from hybrid_workers.errors import UserError
from hybrid_workers.options import add_option

TRUE_WORDS = ("1", "true", "yes", "on")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the `operator` command."""
    parser = subparsers.add_parser(
        "operator",
        help="run the Kubernetes operator (kopf) that turns HybridInference resources into workers",
        description="Watches HybridInference resources and reconciles their Deployments, Services and "
        "NetworkPolicy; same as `kopf run -m hybrid_operator`. Needs a kubeconfig or an in-cluster "
        "service account.",
    )
    add_option(parser, "--namespace", help="watch only this namespace")
    add_option(
        parser, "--all-namespaces", action="store_true", help="watch every namespace (needs a ClusterRole)"
    )
    add_option(
        parser, "--metrics-port", type=int, default=0, help="serve operator /metrics on this port; 0: off"
    )
    add_option(parser, "--liveness", help="kopf liveness endpoint, e.g. http://0.0.0.0:8081/healthz")
    add_option(parser, "--prefill-image", help="default prefill image for resources that name none")
    add_option(parser, "--decode-image", help="default decode image for resources that name none")
    add_option(parser, "--resync-seconds", type=int, default=60, help="period of the drift-repair pass")
    parser.set_defaults(func=run)


def _all_namespaces(value: object) -> bool:
    """The flag (True) or its env mirror ("true", "1", ...)."""
    return value is True or str(value).lower() in TRUE_WORDS


def kopf_arguments(args: argparse.Namespace) -> list[str]:
    """The `kopf run` command line for these flags; UserError unless exactly one scope is chosen."""
    every = _all_namespaces(args.all_namespaces)
    if bool(args.namespace) == every:
        raise UserError("choose exactly one of --namespace NS and --all-namespaces")
    if int(args.metrics_port) < 0 or int(args.resync_seconds) < 1:
        raise UserError(
            f"--metrics-port {args.metrics_port} / --resync-seconds {args.resync_seconds}: out of range"
        )
    argv = ["run", "-m", "hybrid_operator", "--standalone"]
    argv += ["--all-namespaces"] if every else ["--namespace", str(args.namespace)]
    if args.liveness:
        argv += ["--liveness", str(args.liveness)]
    return argv


def export_settings(args: argparse.Namespace) -> None:
    """Hand the operator settings to hybrid_operator.config through their env mirrors."""
    for flag in ("--metrics-port", "--prefill-image", "--decode-image", "--resync-seconds"):
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value not in (None, ""):
            os.environ[env_name(flag)] = str(value)


def run(args: argparse.Namespace) -> int:
    """Run the operator until it is stopped (SIGTERM/SIGINT); returns kopf's exit status."""
    argv = kopf_arguments(args)
    export_settings(args)
    try:
        from kopf.cli import main as kopf_main
    except ImportError:
        raise UserError("kopf is not installed: pip install 'hybrid-inference[operator]'") from None
    result = kopf_main.main(args=argv, prog_name="kopf", standalone_mode=False)
    return int(result or 0)
