"""One `hybrid-inference serve` session: worker command lines, readiness, the banner, the exit report."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

from hybrid_workers import restarts
from hybrid_workers.options import served_name
from hybrid_workers.restarts import RestartPolicy
from hybrid_workers.serve_options import FORWARDED, LOOPBACK, Ports
from hybrid_workers.supervisor import (
    Child,
    ChildSpec,
    ExitCode,
    SessionEnd,
    Supervisor,
    describe_status,
    http_ok,
)

# Ctrl-C, `kill`/orchestrators, a closed terminal: each stops both workers in order.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# uvicorn access-log lines that add nothing to the per-request line: successes, probes and scrapes.
ROUTINE_ACCESS_LOG = re.compile(r'"[A-Z]+ (/ready|/health|/metrics)\S* HTTP/[0-9.]+" \d{3}|" 2\d\d( |$)')


def worker_argv(role: str, args: argparse.Namespace, model: str) -> list[str]:
    """`python -m hybrid_workers <role>` with the model options (the worker's own device wins) and,
    unless --served-model-name is forwarded, the one served name both workers label metrics with."""
    device = getattr(args, f"{role}_device") or args.device
    argv = [sys.executable, "-m", "hybrid_workers", role, "--model", model]
    argv += ["--device", str(device), "--dtype", str(args.dtype)]
    if getattr(args, "served_model_name", None) is None:
        argv += ["--served-model-name", served_name(model)]
    return argv


def forwarded(role: str, args: argparse.Namespace) -> list[str]:
    """The pass-through options given to `serve` that `role` takes, then its --<role>-arg extras."""
    out: list[str] = []
    for flag, option in FORWARDED.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if role in option.roles and value is not None:
            out += [flag, str(value)]
    return out + list(getattr(args, f"{role}_arg"))


def shared_cores_env() -> dict[str, str]:
    """Both workers share this machine's cores: OpenMP threads that spin while idle (the default)
    steal them from the other worker's forward pass; passive waiting gives them back. A user's
    own OMP_WAIT_POLICY wins."""
    return {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}


def prefill_spec(args: argparse.Namespace, model: str, ports: Ports) -> ChildSpec:
    """The prefill worker: gRPC and metrics on loopback only (the decode worker is its only client)."""
    argv = worker_argv("prefill", args, model)
    argv += ["--host", LOOPBACK, "--port", str(ports.prefill), "--metrics-port", str(ports.prefill_metrics)]
    return ChildSpec(
        "prefill", tuple(argv + forwarded("prefill", args)), ExitCode.PREFILL_EXITED, env=shared_cores_env()
    )


def decode_spec(args: argparse.Namespace, model: str, ports: Ports) -> ChildSpec:
    """The decode worker: the OpenAI API on --host:--port, prefill over loopback gRPC."""
    argv = worker_argv("decode", args, model)
    argv += ["--prefill", f"{LOOPBACK}:{ports.prefill}", "--host", args.host, "--port", str(ports.api)]
    hide = None if args.verbose else ROUTINE_ACCESS_LOG
    argv += forwarded("decode", args)
    return ChildSpec("decode", tuple(argv), ExitCode.DECODE_EXITED, env=shared_cores_env(), hide=hide)


def tcp_open(host: str, port: int) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def served_model(api: str, fallback: str) -> str:
    """The first model id /v1/models lists (what clients put in `model`), or `fallback`."""
    try:
        with urllib.request.urlopen(f"{api}/v1/models", timeout=2.0) as response:  # loopback URL we built
            return str(json.load(response)["data"][0]["id"])
    except (OSError, ValueError, KeyError, IndexError):
        return fallback


def ready_instance(api: str) -> str:
    """The prefill worker instance the decode worker's /ready says it is handshaken with, "" if none."""
    try:
        with urllib.request.urlopen(f"{api}/ready", timeout=1.0) as response:  # loopback URL we built
            body = json.load(response)
    except (OSError, ValueError):
        return ""
    return str(body.get("instance", "")) if isinstance(body, dict) and body.get("prefill") == "ready" else ""


def prefill_ready(api: str) -> bool:
    """True when the decode worker's /ready says the prefill worker is handshaken (remote prefill on)."""
    return bool(ready_instance(api))


class PrefillReturn:
    """Tells when the decode worker has handshaken a restarted prefill worker (a new instance id), so
    serve announces "back" only when remote prefill really works again."""

    def __init__(self, api: str) -> None:
        self.api = api
        self.gone = ""  # the instance the decode worker still trusted when the crash was seen

    def crashed(self) -> None:
        """The prefill worker exited: remember which instance is gone."""
        self.gone = ready_instance(self.api)

    def back(self) -> bool:
        """A ready instance other than the one that crashed."""
        instance = ready_instance(self.api)
        return bool(instance) and instance != self.gone


def restart_policy(args: argparse.Namespace) -> RestartPolicy:
    """--max-restarts and --restart-window (UserError for bad values)."""
    return RestartPolicy(max_restarts=int(args.max_restarts), window_s=float(args.restart_window))


def supervise(args: argparse.Namespace, model: str, ports: Ports) -> int:
    """Run both workers until Ctrl-C/SIGTERM, restarting one that crashes (up to the restart policy);
    stop both; return the exit code."""
    policy = restart_policy(args)
    api = f"http://{client_host(args.host)}:{ports.api}"
    supervisor = Supervisor(
        [prefill_spec(args, model, ports), decode_spec(args, model, ports)], sys.stdout, args.stop_timeout
    )
    with stop_signals(lambda *_: supervisor.request_stop()):
        supervisor.start()
        prefill, decode = supervisor.children
        say(
            f"prefill worker pid {prefill.pid}: gRPC {LOOPBACK}:{ports.prefill}, metrics "
            f"http://{LOOPBACK}:{ports.prefill_metrics}/metrics"
        )
        say(f"decode worker pid {decode.pid}: API {api}, metrics {api}/metrics; loading {model}")

        def ready() -> bool:
            return tcp_open(LOOPBACK, ports.prefill) and http_ok(f"{api}/ready") and prefill_ready(api)

        outcome = supervisor.wait_ready(ready, args.ready_timeout)  # start-up failures end serve at once
        if outcome is None:
            announce(api, served_model(api, model))
            prefill_return = PrefillReturn(api)

            def tell(text: str) -> None:
                if text.startswith("the prefill worker"):
                    prefill_return.crashed()
                say(text + _meanwhile(text, args))

            outcome = restarts.supervise(
                supervisor,
                policy,
                tell,
                {"prefill": prefill_return.back, "decode": lambda: http_ok(f"{api}/ready")},
            )
        say("stopping both workers")
        statuses = supervisor.stop_all()
    report(outcome, supervisor.children, statuses, args.ready_timeout, policy.window_s)
    return int(outcome.code)


def _meanwhile(text: str, args: argparse.Namespace) -> str:
    """What users get while a worker is being restarted (added to serve's crash line)."""
    if "restarting" not in text:
        return ""
    if text.startswith("the prefill"):
        if args.fallback == "fail":
            return "; the API stays up, long prompts get 503 until it is back (--fallback fail)"
        return "; the API stays up, long prompts prefill on the decode worker until it is back"
    return "; the API is down until it is back"


def announce(api: str, model: str) -> None:
    """The ready banner: URL, a curl example, how to stop."""
    say(f"ready: OpenAI-compatible API at {api}/v1 (model {model!r})")
    say(f"try:   {example_curl(api, model)}")
    say("one line per request follows (prompt tokens, prefill remote/local, TTFT, TPS, exposed KV)")
    say("Ctrl-C stops both workers")


def report(
    outcome: SessionEnd,
    children: list[Child],
    statuses: dict[str, int],
    ready_timeout: float,
    restart_window: float = 0.0,
) -> None:
    """Explain on stderr why the session ended, with the workers' last lines, unless stopped on request."""
    if outcome.code == ExitCode.STOPPED:
        say(
            "stopped: "
            + ", ".join(f"{name} worker {describe_status(code)}" for name, code in statuses.items())
        )
        return
    if outcome.code == ExitCode.NOT_READY:
        message = f"the API was not ready after {ready_timeout:g} s (--ready-timeout); stopped both workers"
        shown = children
    else:
        assert outcome.child is not None
        other = "decode" if outcome.child.name == "prefill" else "prefill"
        status = describe_status(outcome.child_status or 0)
        if outcome.crashes:
            message = (
                f"the {outcome.child.name} worker crashed {outcome.crashes} times within "
                f"{restart_window:g} s (last: {status}); gave up (--max-restarts) and stopped the "
                f"{other} worker"
            )
        else:
            message = f"the {outcome.child.name} worker {status}; stopped the {other} worker"
        shown = [outcome.child]
    tails = "".join(
        f"\nlast lines of the {c.name} worker:\n" + "\n".join(f"  {x}" for x in c.tail()) for c in shown
    )
    print(
        f"hybrid-inference serve: error (exit {int(outcome.code)}): {message}{tails}",
        file=sys.stderr,
        flush=True,
    )


@contextmanager
def stop_signals(handler: object) -> Iterator[None]:
    """Route STOP_SIGNALS to `handler` while the block runs; restore the old handlers after."""
    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}  # type: ignore[arg-type]
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def client_host(host: str) -> str:
    """The address a local client uses to reach a server listening on `host` (wildcards -> loopback)."""
    if host in ("", "0.0.0.0"):
        return LOOPBACK
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def example_curl(base_url: str, model: str) -> str:
    """A copy-pastable curl command that asks the API for a short completion."""
    body = json.dumps({"model": model, "prompt": "Once upon a time", "max_tokens": 32})
    return f"curl -s {base_url}/v1/completions -H 'Content-Type: application/json' -d '{body}'"


def say(text: str) -> None:
    """One line from `serve` itself on stdout (children's lines carry their role as prefix)."""
    print(f"serve   | {text}", file=sys.stdout, flush=True)
