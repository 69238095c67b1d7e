"""Runs worker processes for `hybrid-inference serve`: start them, relay their output, watch, stop them.

The supervisor owns child processes (the prefill and the decode worker). It starts them in their own
sessions, so a Ctrl-C in the terminal reaches only `serve`, which then stops the children in order;
on Linux each child also gets SIGTERM if `serve` itself dies (PR_SET_PDEATHSIG), so no worker is left
behind. Each child's stdout and stderr are relayed line by line to `serve`'s stdout, prefixed with
the child's name, and the last lines are kept to explain a failure. restarts.supervise runs the same
children but starts one that exits on its own again (and says when it gives up).
"""

from __future__ import annotations

import collections
import ctypes
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TextIO

# How many of a child's last output lines are kept to explain why it failed.
TAIL_LINES = 30
# Seconds between two checks of the children and of readiness.
POLL_SECONDS = 0.1
_PR_SET_PDEATHSIG = 1


class ExitCode(IntEnum):
    """Exit status of `hybrid-inference serve` (documented in docs/operations.md)."""

    STOPPED = 0  # stopped on request (Ctrl-C or SIGTERM); both workers stopped cleanly
    USER_ERROR = 2  # bad flag, port already in use, model not found (the CLI's status for UserError)
    PREFILL_EXITED = 3  # the prefill worker failed at start-up, or crashed too often; decode was stopped
    DECODE_EXITED = 4  # the decode worker failed at start-up, or crashed too often; prefill was stopped
    NOT_READY = 5  # the API did not become ready within --ready-timeout; both workers were stopped


@dataclass(frozen=True)
class ChildSpec:
    """One worker process to run: its name (the output prefix), its command line, and its environment."""

    name: str
    argv: tuple[str, ...]
    exit_code: ExitCode  # what `serve` returns when this child exits first
    env: Mapping[str, str] = field(default_factory=dict)  # added to the inherited environment
    hide: re.Pattern[str] | None = None  # output lines matching it are kept in the tail but not relayed


def _die_with_parent_hook() -> Callable[[], None]:
    """A pre-exec hook asking Linux to SIGTERM the child when `serve` dies (PR_SET_PDEATHSIG).

    libc is looked up here, in the parent: between fork and exec the child may only make plain calls.
    """
    parent_pid = os.getpid()
    prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None

    def hook() -> None:
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return hook


class Child:
    """A running worker: relays its output to `out` with a name prefix and keeps its last lines."""

    def __init__(self, spec: ChildSpec, out: TextIO, out_lock: threading.Lock) -> None:
        self.spec = spec
        self._out = out
        self._out_lock = out_lock
        self._tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._process: subprocess.Popen[str] | None = None
        self._relay: threading.Thread | None = None
        self._out_broken = False

    @property
    def name(self) -> str:
        """The worker's role name, e.g. `prefill`."""
        return self.spec.name

    @property
    def pid(self) -> int:
        """The child's process id (valid once started)."""
        return self._popen().pid

    def start(self) -> None:
        """Start the process; output relaying starts with `relay()` (after every child has forked)."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.spec.env}
        self._process = subprocess.Popen(
            self.spec.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            bufsize=1,
            env=env,
            start_new_session=True,  # a terminal Ctrl-C reaches serve only; serve stops us in order
            preexec_fn=_die_with_parent_hook(),  # forked before the relay threads start
        )

    def restart(self) -> None:
        """Start the exited process again (its relay thread is drained first; the tail is kept)."""
        if self._relay is not None:
            self._relay.join(timeout=2.0)
        self.start()
        self.relay()

    def relay(self) -> None:
        """Start the thread that copies the child's output lines to `out`."""
        self._relay = threading.Thread(target=self._copy_output, name=f"relay-{self.name}", daemon=True)
        self._relay.start()

    def _copy_output(self) -> None:
        stream = self._popen().stdout
        assert stream is not None
        prefix = f"{self.name:<7} | "
        for line in stream:
            text = line.rstrip("\n")
            self._tail.append(text)
            if self._out_broken or (self.spec.hide is not None and self.spec.hide.search(text)):
                continue
            self._write(prefix + text + "\n")

    def _write(self, line: str) -> None:
        """Relay one line; if our own stdout is gone (a closed pipe), keep draining the child silently."""
        with self._out_lock:
            try:
                self._out.write(line)
                self._out.flush()
            except (BrokenPipeError, ValueError):  # ValueError: write to a closed file
                self._out_broken = True

    def returncode(self) -> int | None:
        """The exit status if the child has exited, else None."""
        return self._popen().poll()

    def stop(self, timeout: float) -> int:
        """SIGTERM, then SIGKILL after `timeout` seconds; returns the exit status (reaps the child)."""
        process = self._popen()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._relay is not None:
            self._relay.join(timeout=2.0)  # drain the last lines before serve reports
        return int(process.returncode)

    def kill(self) -> None:
        """SIGKILL the child now if it still runs (a second Ctrl-C); `stop` then reaps it."""
        process = self._popen()
        if process.poll() is None:
            process.kill()

    def tail(self) -> list[str]:
        """The child's last output lines (at most TAIL_LINES)."""
        if self._relay is not None and self.returncode() is not None:
            self._relay.join(timeout=2.0)
        return list(self._tail)

    def _popen(self) -> subprocess.Popen[str]:
        if self._process is None:
            raise RuntimeError(f"{self.name} worker was not started")
        return self._process


@dataclass
class SessionEnd:
    """How a supervised run ended: the exit code and, when a child failed, which one and its status."""

    code: ExitCode
    child: Child | None = None
    child_status: int | None = None
    crashes: int = 0  # crashes of `child` within the restart window when serve gave up (0: no policy)


class Supervisor:
    """Starts children, waits for readiness, runs until a stop request or a child exits, stops the rest.

    A signal handler calls `request_stop` (SIGINT/SIGTERM/SIGHUP); a second request while stopping kills
    the children at once. Children are stopped in reverse start order, so the decode worker (the front
    door) goes before the prefill worker.
    """

    def __init__(self, specs: Sequence[ChildSpec], out: TextIO, stop_timeout: float = 10.0) -> None:
        lock = threading.Lock()
        self.children = [Child(spec, out, lock) for spec in specs]
        self.stop_requested = threading.Event()
        self._stop_timeout = stop_timeout

    def start(self) -> None:
        """Fork every child first, then start the relay threads (fork is only safe without threads)."""
        for child in self.children:
            child.start()
        for child in self.children:
            child.relay()

    def first_exited(self) -> Child | None:
        """The first child (in start order) that has exited, or None while all run."""
        return next((c for c in self.children if c.returncode() is not None), None)

    def wait_ready(self, is_ready: Callable[[], bool], timeout: float) -> SessionEnd | None:
        """Poll `is_ready` until it is true (None), a child exits, a stop is requested, or `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (outcome := self._check()) is not None:
                return outcome
            if is_ready():
                return None
            self.stop_requested.wait(POLL_SECONDS)
        return SessionEnd(ExitCode.NOT_READY)

    def run(self) -> SessionEnd:
        """Block until a stop is requested or a child exits (restarts.supervise restarts them instead)."""
        while (outcome := self._check()) is None:
            self.stop_requested.wait(POLL_SECONDS)
        return outcome

    def request_stop(self) -> None:
        """Ask for a stop (what a signal handler calls); asked again while stopping: SIGKILL everyone."""
        if self.stop_requested.is_set():
            for child in self.children:
                child.kill()
        self.stop_requested.set()

    def stop_all(self) -> dict[str, int]:
        """Stop every child still running (decode first); returns each child's exit status by name."""
        return {child.name: child.stop(self._stop_timeout) for child in reversed(self.children)}

    def _check(self) -> SessionEnd | None:
        if (child := self.first_exited()) is not None:
            return SessionEnd(child.spec.exit_code, child, child.returncode())
        if self.stop_requested.is_set():
            return SessionEnd(ExitCode.STOPPED)
        return None


def describe_status(status: int) -> str:
    """`exited 0`, or `ended by SIGTERM` for a negative status (killed by that signal)."""
    return f"ended by {signal.Signals(-status).name}" if status < 0 else f"exited {status}"


def http_ok(url: str, timeout: float = 1.0) -> bool:
    """True when GET `url` answers 200 (used to poll the decode worker's /ready)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # our own loopback URL
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False
