"""`hybrid-inference agent`: the native decode agent (e.g. on a Mac), or its launchd service file.

aiohttp and kopf (the `[operator]` extra, for the shared Kubernetes client) are imported only when the
agent runs, so this module loads everywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from hybrid_workers.enums import ComputeDevice, Engine, LogLevel
from hybrid_workers.errors import UserError
from hybrid_workers.options import add_option, apply_log_level

DEFAULT_KUBECONFIG = "~/.kube/hybrid-inference-agent.yaml"
RUN_FLAGS = (
    "--name", "--kubeconfig", "--namespace", "--address", "--listen-host", "--engine", "--device",
    "--profile", "--device-profile", "--tls-dir", "--lease-seconds", "--renew-seconds", "--watch-seconds",
    "--max-backoff-seconds", "--log-level",
)  # fmt: skip


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the `agent` command."""
    parser = subparsers.add_parser(
        "agent",
        help="run the native decode agent: decode workers the operator assigns to this machine",
        description="Announces this machine to the cluster with a Lease (engine, device, address, free "
        "memory, profile), runs a decode worker for every HybridInference whose decode.agent names it, "
        "restarts crashed workers, and reports their readiness. --install-launchd writes (and on macOS "
        "loads) a launchd service running this same command instead. See docs/nodes.md.",
    )
    add_option(parser, "--name", help="agent name: its Lease, and decode.agent.name in resources")
    add_option(parser, "--kubeconfig", default=DEFAULT_KUBECONFIG, help="kubeconfig of the agent's account")
    add_option(parser, "--namespace", help="comma-separated namespaces the agent is bound in")
    add_option(parser, "--address", help="LAN IP the cluster reaches workers at; none: the route to the API")
    add_option(parser, "--listen-host", default="0.0.0.0", help="address the workers listen on")
    add_option(parser, "--engine", default=Engine.AUTO, choices=Engine, help="decode engine")
    add_option(parser, "--device", choices=ComputeDevice, help="what the engine computes on; none: detected")
    add_option(parser, "--profile", help="device profile from `calibrate --out`, announced in the Lease")
    add_option(
        parser, "--device-profile", help="or a built-in planner device id, e.g. m3-ultra (`plan --list`)"
    )
    add_option(
        parser,
        "--tls-dir",
        help="folder with tls.crt, tls.key, ca.crt, announced for resources auto placement assigns here",
    )
    add_option(parser, "--lease-seconds", default=30, type=int, help="Lease duration (silence = lost)")
    add_option(parser, "--renew-seconds", default=None, type=float, help="heartbeat period; none: lease/3")
    add_option(parser, "--watch-seconds", default=60, type=int, help="re-list assignments this often")
    add_option(parser, "--max-backoff-seconds", default=30.0, type=float, help="longest restart backoff")
    add_option(parser, "--log-level", default=LogLevel.INFO, choices=LogLevel, help="log detail")
    add_option(parser, "--install-launchd", action="store_true", help="write the launchd plist, then exit")
    add_option(
        parser, "--plist", default=None, help="plist path; default ~/Library/LaunchAgents/<label>.plist"
    )
    add_option(parser, "--log-dir", default="~/Library/Logs/hybrid-inference", help="launchd log folder")
    add_option(parser, "--no-load", action="store_true", help="write the plist but do not launchctl it")
    parser.set_defaults(func=run)


def build_config(args: argparse.Namespace):  # -> AgentConfig
    """The AgentConfig of the parsed flags (UserError for a bad value)."""
    from hybrid_workers.agent.config import AgentConfig

    if not args.name:
        raise UserError("--name is required (the agent's name, e.g. mac-studio)")
    lease = int(args.lease_seconds)
    renew = float(args.renew_seconds) if args.renew_seconds not in (None, "") else lease / 3
    return AgentConfig(
        name=str(args.name),
        kubeconfig=Path(str(args.kubeconfig)).expanduser(),
        namespaces=tuple(ns.strip() for ns in str(args.namespace or "").split(",") if ns.strip()),
        address=args.address or None,
        listen_host=str(args.listen_host),
        engine=Engine(args.engine),
        device=ComputeDevice(args.device) if args.device else None,
        profile=Path(str(args.profile)).expanduser() if args.profile else None,
        device_profile=str(args.device_profile) if args.device_profile else None,
        tls_dir=Path(str(args.tls_dir)).expanduser().resolve() if args.tls_dir else None,
        lease_seconds=lease,
        renew_seconds=renew,
        watch_seconds=int(args.watch_seconds),
        max_backoff_seconds=float(args.max_backoff_seconds),
    )


def run_arguments(args: argparse.Namespace) -> list[str]:
    """The agent's own command line for launchd (every run flag that has a value, paths absolute)."""
    argv = [sys.executable, "-m", "hybrid_workers", "agent"]
    for flag in RUN_FLAGS:
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value not in (None, ""):
            text = str(value)
            if flag in ("--kubeconfig", "--profile", "--tls-dir"):
                text = str(Path(text).expanduser().resolve())
            argv += [flag, text]
    return argv


def install_launchd(args: argparse.Namespace) -> int:
    """Write the plist (and load it on macOS unless --no-load); print where it is."""
    from hybrid_workers.agent import launchd

    config = build_config(args)  # the same checks as a real start
    label = f"{launchd.LABEL_PREFIX}.{config.name}"
    default = Path("~/Library/LaunchAgents").expanduser() / f"{label}.plist"
    path = Path(str(args.plist)).expanduser() if args.plist else default
    log_dir = Path(str(args.log_dir)).expanduser()
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "PYTHONUNBUFFERED": "1"}
    launchd.write(path, launchd.plist(label, run_arguments(args), log_dir, env))
    print(f"wrote {path}")
    if args.no_load:
        print("load it with: " + "; ".join(" ".join(c) for c in launchd.load_commands(path, label)))
        return 0
    try:
        launchd.load(path, label)
    except OSError as exc:
        raise UserError(f"{exc}") from None
    print(f"loaded {label}; logs in {log_dir}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the agent until SIGTERM/SIGINT (or write its launchd service with --install-launchd)."""
    if args.install_launchd is True or str(args.install_launchd).lower() in ("1", "true"):
        return install_launchd(args)
    config = build_config(args)
    try:
        from hybrid_operator.kube import KubeClient

        from hybrid_workers.agent.host import identity
        from hybrid_workers.agent.kubeconfig import load
        from hybrid_workers.agent.permissions import AGENT_PERMISSIONS
        from hybrid_workers.agent.runner import Agent
    except ImportError as exc:
        raise UserError(
            f"{exc.name} is not installed: pip install 'hybrid-inference[worker,operator]'"
        ) from None
    apply_log_level(args.log_level, "hybrid_inference.agent", "agent")
    info = load(config.kubeconfig)
    kube = KubeClient(
        info, f"hybrid-inference-agent-{config.name}", lambda: load(config.kubeconfig), AGENT_PERMISSIONS
    )
    asyncio.run(Agent(config, kube, identity(config, info.server)).run())
    return 0
