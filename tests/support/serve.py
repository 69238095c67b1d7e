"""A running `hybrid-inference serve` for tests: free ports, readiness, child pids, captured output.

Typical use (one serve per test module keeps the suite fast):

    from support.serve import running_serve

    @pytest.fixture(scope="module")
    def serve(tiny_model_dir):
        with running_serve(tiny_model_dir, "--remote-prefill-min-tokens", "1") as running:
            yield running

    def test_x(serve):
        client = openai.OpenAI(base_url=serve.base_url + "/v1", api_key="unused")
        metrics_text = urllib.request.urlopen(serve.decode_metrics_url).read()

`serve` runs as `python -m hybrid_workers serve` with its own stdout piped into `lines`; it is started
with --device cpu --dtype float32 unless the extra arguments say otherwise.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from support.loopback import free_ports

READY_MARK = "ready: OpenAI-compatible API at"
PID_LINE = re.compile(r"serve\s+\| (prefill|decode) worker pid (\d+)")


def process_gone(pid: int, timeout: float = 10.0) -> bool:
    """True once no process (or only a zombie) has `pid` (Linux /proc); polls up to `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().rsplit(")", 1)[-1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


@dataclass
class RunningServe:
    """One `serve` process and what a test needs to talk to it."""

    process: subprocess.Popen[str]
    api_port: int
    prefill_port: int
    prefill_metrics_port: int
    lines: list[str] = field(default_factory=list)  # serve's stdout so far (both workers' lines too)
    pids: dict[str, int] = field(default_factory=dict)  # worker role -> pid, from serve's own lines
    _changed: threading.Condition = field(default_factory=threading.Condition)
    _reading: bool = True  # False once serve's stdout is closed (the process ended)

    @property
    def base_url(self) -> str:
        """http://127.0.0.1:PORT of the OpenAI-compatible API (append /v1 for the openai client)."""
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def decode_metrics_url(self) -> str:
        """The decode worker's Prometheus endpoint."""
        return f"{self.base_url}/metrics"

    @property
    def prefill_metrics_url(self) -> str:
        """The prefill worker's Prometheus endpoint."""
        return f"http://127.0.0.1:{self.prefill_metrics_port}/metrics"

    def output(self) -> str:
        """All of serve's output so far, one string."""
        with self._changed:
            return "\n".join(self.lines)

    def wait_for_line(self, pattern: str, timeout: float = 60.0, start: int = 0) -> str:
        """The first output line from index `start` on that matches regex `pattern`; waits for it."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines[start:]:
                    if regex.search(line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or (self.process.poll() is not None and not self._reading):
                    raise TimeoutError(f"no line matching {pattern!r} in serve's output:\n{self.output()}")
                self._changed.wait(min(left, 0.5))

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60.0) -> int:
        """Send `sig` to serve (SIGINT = Ctrl-C) and return its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            line = raw.rstrip("\n")
            if match := PID_LINE.search(line):
                self.pids[match[1]] = int(match[2])
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._reading = False
            self._changed.notify_all()


def start_serve(model: str | Path | None, *args: str, env: dict[str, str] | None = None) -> RunningServe:
    """Start `serve` on free ports for `model` (None: no --model) with extra CLI `args`; returns before
    it is ready."""
    api, prefill, prefill_metrics = free_ports(3)
    argv = [sys.executable, "-m", "hybrid_workers", "serve", "--device", "cpu"]
    argv += [] if model is None else ["--model", str(model)]
    argv += ["--dtype", "float32", "--port", str(api), "--prefill-port", str(prefill)]
    argv += ["--prefill-metrics-port", str(prefill_metrics), *args]
    process = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    running = RunningServe(process, api, prefill, prefill_metrics)
    threading.Thread(target=running._read, name="serve-output", daemon=True).start()
    return running


@contextmanager
def running_serve(
    model: str | Path | None, *args: str, env: dict[str, str] | None = None, ready_timeout: float = 120.0
) -> Iterator[RunningServe]:
    """A ready `serve` (its banner printed); stopped with SIGINT on exit (killed if it hangs)."""
    running = start_serve(model, *args, env=env)
    try:
        running.wait_for_line(re.escape(READY_MARK), timeout=ready_timeout)
        yield running
    finally:
        if running.process.poll() is None:
            running.stop()
