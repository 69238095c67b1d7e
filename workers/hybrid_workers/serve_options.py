"""What `serve` hands its two workers: the pass-through flags, loopback, and the three ports it uses."""

from __future__ import annotations

import argparse
import errno
import socket
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from hybrid_workers.enums import Engine, Fallback, WireEncoding
from hybrid_workers.errors import UserError

LOOPBACK = "127.0.0.1"


def positive_int(text: str) -> int:
    """An argparse `type`: an integer ≥ 1, refused with the value otherwise."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """An argparse `type`: an integer ≥ 0, refused with the value otherwise."""
    return _int_at_least(text, 0)


def positive_int_or_auto(text: str) -> str:
    """An argparse `type`: `auto` or an integer ≥ 1 (passed on as given)."""
    return text if text.strip() == "auto" else str(positive_int(text))


def positive_seconds(text: str) -> float:
    """An argparse `type`: a number of seconds > 0, refused with the value otherwise."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text}: must be more than 0 seconds")
    return value


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"{value} must be at least {low}")
    return value


@dataclass(frozen=True)
class Forwarded:
    """A worker flag `serve` takes and passes on; checked here so a bad value fails before workers start."""

    roles: tuple[str, ...]  # the workers that take it
    help: str
    parse: Callable[[str], object] | None = None  # argparse type; None: checked by the worker
    choices: type[StrEnum] | None = None


FORWARDED: dict[str, Forwarded] = {
    "--served-model-name": Forwarded(
        ("prefill", "decode"), "the `model` clients send and both workers' metrics label; none: from --model"
    ),
    "--remote-prefill-min-tokens": Forwarded(
        ("decode",), "prompts with at least this many tokens prefill on the prefill worker (or auto)"
    ),
    "--fallback": Forwarded(
        ("decode",),
        "when the prefill worker fails: local (prefill on the decode worker) or fail (503)",
        choices=Fallback,
    ),
    "--max-concurrency": Forwarded(
        ("decode",),
        "requests the decode worker runs at once (its largest batch; auto: by device)",
        positive_int_or_auto,
    ),
    "--kv-cache-bytes": Forwarded(
        ("decode",), "KV memory of the decode worker's batch, e.g. 4G (auto: from free memory)"
    ),
    "--prefill-chunk-tokens": Forwarded(
        ("decode",), "local prefill chunk between two decode steps (bounds inter-token latency)", positive_int
    ),
    "--max-queue": Forwarded(
        ("decode",), "requests that may wait for a slot; beyond it the API answers 429", non_negative_int
    ),
    "--kv-compression": Forwarded(
        ("decode",), "KV wire compression the decode worker asks for", choices=WireEncoding
    ),
    "--prefill-stall-timeout": Forwarded(
        ("decode",), "seconds without a KV frame or heartbeat before a remote prefill counts as stalled"
    ),
    "--engine": Forwarded(
        ("decode",),
        "decode engine: torch, mlx (the [mlx] extra) or auto (mlx on Apple silicon when installed)",
        choices=Engine,
    ),
    "--chunk-bytes": Forwarded(("prefill",), "largest KV frame payload in bytes (e.g. 4MiB)"),
}


@dataclass(frozen=True)
class Ports:
    """The ports `serve` uses: API (host side), prefill gRPC and prefill metrics (loopback)."""

    api: int
    prefill: int
    prefill_metrics: int


def free_port(host: str = LOOPBACK) -> int:
    """A port the OS reports free on `host` right now."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def ensure_port_free(flag: str, host: str, port: int) -> None:
    """Raise UserError naming `flag` and the port when something already listens on host:port."""
    if not 0 < port < 65536:
        raise UserError(f"{flag} {port}: not a TCP port; use 1-65535")
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # what the workers do too
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UserError(
                    f"{flag} {port}: {host}:{port} is already in use; stop what listens there or choose "
                    f"another port with {flag}"
                ) from exc
            raise UserError(f"{flag} {port}: cannot listen on {host}:{port}: {exc.strerror}") from exc


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def choose_ports(host: str, api: int, prefill: int, prefill_metrics: int) -> Ports:
    """The given ports after checking they are free, with 0 replaced by free loopback ports."""
    ensure_port_free("--port", host, api)
    ports = Ports(api, prefill or free_port(), prefill_metrics or free_port())
    if prefill:
        ensure_port_free("--prefill-port", LOOPBACK, ports.prefill)
    if prefill_metrics:
        ensure_port_free("--prefill-metrics-port", LOOPBACK, ports.prefill_metrics)
    used = [ports.api, ports.prefill, ports.prefill_metrics]
    if len(set(used)) != len(used):
        raise UserError(f"--port/--prefill-port/--prefill-metrics-port {used}: the three ports must differ")
    return ports
