"""Worker processes for the decode process tests: `python -m hybrid_workers <role>` on CPU, float32."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

# Long enough (> --remote-prefill-min-tokens 8) that the decode worker asks the prefill worker for it.
PROMPT = "The decode worker asks the prefill worker for the cache of this rather long prompt, " * 2


def spawn(
    role: str, args: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start `hybrid-inference <role>` with `args`; its stderr goes to `log` (env: this process's)."""
    argv = [sys.executable, "-m", "hybrid_workers", role, "--device", "cpu", "--dtype", "float32", *args]
    environment = dict(os.environ) if env is None else env
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log.open("wb"), env=environment)


def prefill_ready(url: str) -> bool:
    """The decode worker at `url` is ready with its prefill worker reachable (with fallback local,
    /ready is 200 without it, so the body's `prefill` field is what tells)."""
    try:
        return httpx.get(url + "/ready", timeout=2).json().get("prefill") == "ready"
    except httpx.HTTPError:
        return False


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGINT (a graceful stop), then SIGKILL if it is still running after 15 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
