"""Two network namespaces joined by a veth pair, each end shaped with `tc ... tbf` (netem is unavailable).

Used by the network tests (`prefill_across` + `run_decode_side`: a prefill worker in one namespace, a
client in the other) and by bench/kv_bench.py. Needs root and iproute2; `skip_reason()` says why
not when it cannot run. Names are unique per run, and the namespaces (and with them the veth pair) are
deleted on exit, whatever happened.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass


def skip_reason() -> str | None:
    """Why network namespaces cannot be used here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root for `ip netns` and `tc` (run as root, or skip the network tests)"
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return "needs iproute2 (`ip`, `tc`): run `make system-deps`"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"`ip netns` does not work here: {probe.stderr.strip()}"
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@dataclass(frozen=True)
class Link:
    """The two ends: run a command in the prefill or the decode namespace via `exec_argv`."""

    prefill_ns: str
    decode_ns: str
    prefill_ip: str
    decode_ip: str
    rate: str

    def argv(self, namespace: str, command: Sequence[str]) -> list[str]:
        """`ip netns exec <namespace> <command...>`."""
        return ["ip", "netns", "exec", namespace, *command]


def _burst(rate: str) -> str:
    """A tbf bucket that holds ~4 ms of traffic at `rate` (at least 32 kbit), e.g. 100mbit -> 400kbit."""
    units = {"kbit": 1e3, "mbit": 1e6, "gbit": 1e9}
    for suffix, scale in units.items():
        if rate.endswith(suffix):
            bits = float(rate.removesuffix(suffix)) * scale
            return f"{max(32, int(bits * 0.004 / 1000))}kbit"
    raise ValueError(f"rate {rate!r}: use a number with kbit, mbit or gbit")


@contextmanager
def shaped_link(rate: str = "100mbit") -> Iterator[Link]:
    """Create the namespaces and the shaped veth pair; delete them on exit."""
    tag = uuid.uuid4().hex[:6]
    link = Link(f"hi-pf-{tag}", f"hi-dc-{tag}", "10.203.0.1", "10.203.0.2", rate)
    ends = ((link.prefill_ns, f"vpf{tag}", link.prefill_ip), (link.decode_ns, f"vdc{tag}", link.decode_ip))
    try:
        for namespace, _, _ in ends:
            _ip("netns", "add", namespace)
        _ip("link", "add", ends[0][1], "type", "veth", "peer", "name", ends[1][1])
        for namespace, device, address in ends:
            _ip("link", "set", device, "netns", namespace)
            _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", device)
            _ip("-n", namespace, "link", "set", device, "up")
            _ip("-n", namespace, "link", "set", "lo", "up")
            subprocess.run(
                ["ip", "netns", "exec", namespace, "tc", "qdisc", "add", "dev", device, "root", "tbf",
                 "rate", rate, "burst", _burst(rate), "latency", "50ms"],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
        yield link
    finally:
        for namespace, _, _ in ends:
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)


@contextmanager
def prefill_across(rate: str, worker: Callable[[Link], list[str]]) -> Iterator[Link]:
    """A shaped link with a prefill worker (argv: `worker(link)`) running in its prefill namespace,
    ready once it printed its "prefill worker" banner; the worker is stopped on exit."""
    with shaped_link(rate) as link:
        process = subprocess.Popen(
            link.argv(link.prefill_ns, worker(link)), stdout=subprocess.PIPE, text=True
        )
        try:
            banner = process.stdout.readline() if process.stdout is not None else ""
            if "prefill worker" not in banner:
                raise RuntimeError(f"the prefill worker did not start in {link.prefill_ns}: {banner!r}")
            yield link
        finally:
            process.terminate()
            process.wait(timeout=30)


def run_decode_side(link: Link, argv: Sequence[str], timeout_s: float = 240) -> list[str]:
    """Run `argv` in the decode namespace; its stdout lines (RuntimeError with its stderr on failure)."""
    done = subprocess.run(link.argv(link.decode_ns, argv), capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[1] if len(argv) > 1 else argv[0]} failed: {done.stderr[-2000:]}")
    return done.stdout.splitlines()


def prefill_cli(link: Link, model_dir: str, *flags: str) -> list[str]:
    """`hybrid-inference prefill` on the link's prefill address, port 50051, CPU, metrics off."""
    argv = [sys.executable, "-m", "hybrid_workers", "prefill", "--model", model_dir, "--device", "cpu"]
    return [*argv, "--host", link.prefill_ip, "--port", "50051", "--metrics-port", "0", *flags]
