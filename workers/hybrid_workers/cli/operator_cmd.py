"""`hybrid-inference operator`: runs the kopf operator, i.e. `kopf run -m hybrid_operator` with our flags.

kopf is imported only inside `run`, so this module loads where kopf is not installed (worker images).
"""

from __future__ import annotations

import argparse
import os
import sys

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
    election = parser.add_argument_group(
        "leader election",
        "with several replicas, only the holder of a coordination.k8s.io Lease reconciles; the others "
        "stand by (their --liveness endpoint answers 200) and take over when it is released or expires",
    )
    add_option(election, "--leader-election", action="store_true", help="elect a leader through a Lease")
    add_option(election, "--leader-election-namespace", help="namespace of the Lease (the operator's own)")
    add_option(election, "--lease-name", default="hybrid-inference-operator", help="name of the Lease")
    add_option(
        election, "--lease-duration-seconds", type=int, default=15, help="a standby takes over after this"
    )
    add_option(
        election, "--renew-deadline-seconds", type=int, default=10, help="the leader gives up after this"
    )
    add_option(election, "--retry-period-seconds", type=int, default=2, help="period of claims and renewals")
    parser.set_defaults(func=run)


def _switched_on(value: object) -> bool:
    """A store_true flag (True) or its env mirror ("true", "1", ...)."""
    return value is True or str(value).lower() in TRUE_WORDS


def kopf_arguments(args: argparse.Namespace) -> list[str]:
    """The `kopf run` command line for these flags; UserError unless exactly one scope is chosen."""
    every = _switched_on(args.all_namespaces)
    if bool(args.namespace) == every:
        raise UserError("choose exactly one of --namespace NS and --all-namespaces")
    if int(args.metrics_port) < 0 or int(args.resync_seconds) < 1:
        raise UserError(
            f"--metrics-port {args.metrics_port} / --resync-seconds {args.resync_seconds}: out of range"
        )
    check_election(args)
    argv = ["run", "-m", "hybrid_operator", "--standalone"]
    argv += ["--all-namespaces"] if every else ["--namespace", str(args.namespace)]
    if args.liveness:
        argv += ["--liveness", str(args.liveness)]
    return argv


def check_election(args: argparse.Namespace) -> None:
    """UserError naming the flag when the leader-election settings cannot work."""
    if not _switched_on(args.leader_election):
        return
    if not (args.leader_election_namespace or args.namespace):
        raise UserError(
            "--leader-election with --all-namespaces needs --leader-election-namespace NS "
            "(the operator's own namespace, where its Lease lives)"
        )
    retry, renew, lease = (
        int(args.retry_period_seconds), int(args.renew_deadline_seconds), int(args.lease_duration_seconds)
    )  # fmt: skip
    if not 1 <= retry < renew < lease:
        raise UserError(
            f"--retry-period-seconds {retry}, --renew-deadline-seconds {renew}, --lease-duration-seconds "
            f"{lease}: need 1 ≤ retry period < renew deadline < lease duration (e.g. 2, 10, 15)"
        )


ELECTION_FLAGS = (
    "--lease-name", "--lease-duration-seconds", "--renew-deadline-seconds", "--retry-period-seconds"
)  # fmt: skip


def export_settings(args: argparse.Namespace) -> None:
    """Hand the operator settings to hybrid_operator.config and .leadership through their env mirrors."""
    flags = ("--metrics-port", "--prefill-image", "--decode-image", "--resync-seconds", "--liveness")
    for flag in (*flags, *ELECTION_FLAGS):
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value not in (None, ""):
            os.environ[env_name(flag)] = str(value)
    if _switched_on(args.leader_election):
        os.environ[env_name("--leader-election")] = "true"
        namespace = args.leader_election_namespace or args.namespace
        os.environ[env_name("--leader-election-namespace")] = str(namespace)


def run(args: argparse.Namespace) -> int:
    """Run the operator until it is stopped (SIGTERM/SIGINT); returns kopf's exit status."""
    argv = kopf_arguments(args)
    export_settings(args)
    try:
        from kopf.cli import main as kopf_main
    except ImportError:
        raise UserError("kopf is not installed: pip install 'hybrid-inference[operator]'") from None
    result = kopf_main.main(args=argv, prog_name="kopf", standalone_mode=False)
    from hybrid_operator.handlers import lost_leadership
    from hybrid_operator.leadership import EXIT_LOST

    if lost_leadership():
        print(
            "hybrid-inference operator: lost the leader Lease; exiting (restart: a standby)", file=sys.stderr
        )
        return EXIT_LOST
    return int(result or 0)
