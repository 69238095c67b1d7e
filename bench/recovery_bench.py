"""Recovery benchmark: how fast remote prefill heals under `serve`, and what a dead peer costs a request.

Run: `python bench/recovery_bench.py [--rounds 3] [--stall-timeout 2] [--out results.json]`. It starts
`hybrid-inference serve` on the tiny demo model (real processes on loopback) and measures, per round:
- restart: SIGKILL of the prefill worker -> the decode worker's /ready says "ready" with a new
  prefill instance (serve's backoff + the worker's start-up + the decode worker's probe);
- SIGCONT: after a SIGSTOP that a request detected as a stall (the breaker is open) -> /ready says
  "ready" again (the probe backoff: 0.1 s doubling to 1 s);
- first byte while the breaker is open: a streamed long prompt's first token chunk (client clock)
  with the prefill worker stopped, next to the same request with a healthy peer (remote prefill)
  and to the stalled request itself (the stall limit is in its first byte).
Prints JSON; numbers go to docs/benchmarks.md, never into tests.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

PROMPT = "The prefill worker computes this long prompt and streams its KV cache back, layer by layer. " * 3
PID_LINE = re.compile(r"serve\s+\| (prefill|decode) worker pid (\d+)")


def free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    for sock in socks:
        sock.bind(("127.0.0.1", 0))
    ports = [int(sock.getsockname()[1]) for sock in socks]
    for sock in socks:
        sock.close()
    return ports


class Serve:
    """`hybrid-inference serve` on free ports; tracks the workers' pids from its output."""

    def __init__(self, stall_timeout: float) -> None:
        api, prefill, metrics = free_ports(3)
        self.url = f"http://127.0.0.1:{api}"
        argv = [sys.executable, "-m", "hybrid_workers", "serve", "--device", "cpu", "--dtype", "float32"]
        argv += ["--port", str(api), "--prefill-port", str(prefill), "--prefill-metrics-port", str(metrics)]
        argv += ["--remote-prefill-min-tokens", "8", "--prefill-stall-timeout", str(stall_timeout)]
        argv += ["--restart-window", "3600"]  # the default probe interval (2 s)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYBRID_INFERENCE_DEMO_PRESET": "tiny"}
        self.process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        self.pids: dict[str, int] = {}
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self.ready.wait(300):
            raise RuntimeError("serve did not become ready")
        self.model = httpx.get(self.url + "/v1/models").json()["data"][0]["id"]

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if match := PID_LINE.search(line):
                self.pids[match[1]] = int(match[2])
            if "ready: OpenAI-compatible API" in line:
                self.ready.set()

    def state(self) -> dict:
        return httpx.get(self.url + "/ready", timeout=10).json()

    def first_byte(self) -> float:
        """Seconds from sending a streamed greedy request to its first token chunk (client clock)."""
        body = {"model": self.model, "prompt": PROMPT, "max_tokens": 4, "temperature": 0, "stream": True}
        start = time.perf_counter()
        first = None
        with httpx.stream("POST", self.url + "/v1/completions", json=body, timeout=120) as response:
            for line in response.iter_lines():  # read to the end: the request finishes before the next
                if first is None and line.startswith("data: {"):
                    first = time.perf_counter() - start
        if first is None:
            raise RuntimeError("no token")
        return first

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        self.process.wait(60)


def until(condition: Callable[[], bool], timeout_s: float = 120.0) -> float:
    """Seconds until `condition()` holds (polled every 10 ms)."""
    start = time.perf_counter()
    while not condition():
        if time.perf_counter() - start > timeout_s:
            raise TimeoutError("condition not reached")
        time.sleep(0.01)
    return time.perf_counter() - start


def one_round(serve: Serve, skipped_requests: int) -> dict[str, object]:
    until(lambda: serve.state()["prefill"] == "ready")
    healthy = [serve.first_byte() for _ in range(skipped_requests)]
    old_instance = serve.state()["instance"]
    os.kill(serve.pids["prefill"], signal.SIGKILL)
    restart = until(lambda: serve.state()["prefill"] == "ready" and serve.state()["instance"] != old_instance)
    serve.first_byte()  # warm the new worker
    pid = serve.pids["prefill"]
    os.kill(pid, signal.SIGSTOP)
    try:
        stalled = serve.first_byte()  # enters remote, stalls, falls back: opens the breaker
        open_breaker = [serve.first_byte() for _ in range(skipped_requests)]
    finally:
        os.kill(pid, signal.SIGCONT)
    resumed = until(lambda: serve.state()["prefill"] == "ready")
    return {
        "restart_to_remote_ready_s": restart,
        "sigcont_to_remote_ready_s": resumed,
        "first_byte_healthy_s": statistics.median(healthy),
        "first_byte_stalled_request_s": stalled,
        "first_byte_breaker_open_s": statistics.median(open_breaker),
    }


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stall-timeout", type=float, default=2.0)
    parser.add_argument("--requests", type=int, default=5, help="requests per first-byte sample")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    serve = Serve(args.stall_timeout)
    try:
        rounds = [one_round(serve, args.requests) for _ in range(args.rounds)]
    finally:
        serve.stop()
    keys = [key for key in rounds[0]]
    result = {
        "settings": {
            "rounds": args.rounds,
            "stall_timeout_s": args.stall_timeout,
            "requests_per_sample": args.requests,
            "loadavg": Path("/proc/loadavg").read_text().split()[:3],
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
        },
        **{key: summary([float(r[key]) for r in rounds]) for key in keys},  # type: ignore[arg-type]
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as out:
            out.write(text + "\n")


if __name__ == "__main__":
    main()
