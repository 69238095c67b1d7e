"""A real Prometheus server for tests: Debian's `prometheus` binary on 127.0.0.1 with a generated config.

Typical use (the fixture skips the test with a clear reason when Prometheus is not installed):

    from support.prometheus import ScrapeTarget, running_prometheus

    with running_prometheus([ScrapeTarget("decode", "127.0.0.1:8000")], tmp_path) as prom:
        prom.wait_for_targets_up()
        count = prom.wait_for("sum(hybrid_inference_time_to_first_token_seconds_count)", lambda v: v >= 3)

Scrapes (and rule evaluation) run every second, so tests poll `wait_for` instead of sleeping.
Install the binary with `make system-deps` (or `apt-get install --no-install-recommends prometheus`).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

INSTALL_HINT = "install the Debian package `prometheus` (make system-deps, or apt-get install prometheus)"


@dataclass(frozen=True)
class ScrapeTarget:
    """One endpoint Prometheus scrapes: its job name, HOST:PORT and path."""

    job: str  # becomes the `job` label of every scraped series
    address: str  # HOST:PORT, e.g. 127.0.0.1:8000
    metrics_path: str = "/metrics"


def prometheus_binary() -> str | None:
    """Path of the `prometheus` binary, or None when it is not installed."""
    return shutil.which("prometheus")


def require_prometheus() -> str:
    """The `prometheus` binary path; skips the calling test with a clear reason when it is missing."""
    path = prometheus_binary()
    if path is None:
        pytest.skip(f"prometheus not found on PATH: {INSTALL_HINT}")
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(
    path: Path, targets: Sequence[ScrapeTarget], interval: str = "1s", rule_files: Sequence[Path] = ()
) -> Path:
    """Write a prometheus.yml scraping `targets` every `interval` and loading `rule_files`."""
    addresses: dict[tuple[str, str], list[str]] = {}
    for target in targets:
        addresses.setdefault((target.job, target.metrics_path), []).append(target.address)
    jobs = [
        {"job_name": job, "metrics_path": path, "static_configs": [{"targets": hosts}]}
        for (job, path), hosts in addresses.items()
    ]
    config = {
        "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": jobs,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class Prometheus:
    """A Prometheus process started by `start()`; `query`/`wait_for` use its HTTP API (/api/v1)."""

    def __init__(self, binary: str, config: Path, workdir: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "prometheus.log"
        self._argv = [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        """Start Prometheus and wait until /-/ready answers; raises with its log if it does not."""
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(self._argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self._process.returncode}:\n{self.log()}")
            if self._get("/-/ready", raw=True) is not None:
                return
            time.sleep(0.1)
        raise TimeoutError(f"prometheus not ready on {self.url} after {timeout} s:\n{self.log()}")

    def stop(self) -> None:
        """Terminate Prometheus (SIGTERM, then SIGKILL after 10 s)."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def log(self) -> str:
        """Prometheus' own log output so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query: the result list of /api/v1/query (each item has `metric` and `value`)."""
        body = self._get("/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        if body is None or body.get("status") != "success":
            raise RuntimeError(f"query {expr!r} failed: {body}")
        return list(body["data"]["result"])

    def value(self, expr: str) -> float | None:
        """The value of the first series `expr` returns, or None when it returns nothing."""
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, expr: str, predicate: Callable[[float], bool], timeout: float = 30.0) -> float:
        """Poll `expr` until its value satisfies `predicate`; returns it, or raises showing the last value."""
        deadline = time.monotonic() + timeout
        last: float | None = None
        while time.monotonic() < deadline:
            last = self.value(expr)
            if last is not None and predicate(last):
                return last
            time.sleep(0.25)
        raise TimeoutError(f"{expr!r} did not reach the expected value in {timeout} s; last value: {last}")

    def targets(self) -> list[dict[str, Any]]:
        """The active scrape targets (/api/v1/targets), each with `health`, `lastError`, `scrapeUrl`."""
        body = self._get("/api/v1/targets")
        return list(body["data"]["activeTargets"]) if body else []

    def wait_for_targets_up(self, timeout: float = 30.0) -> None:
        """Wait until every configured target has been scraped successfully at least once."""
        deadline = time.monotonic() + timeout
        targets: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            targets = self.targets()
            if targets and all(t["health"] == "up" for t in targets):
                return
            time.sleep(0.25)
        states = [(t["scrapeUrl"], t["health"], t["lastError"]) for t in targets]
        raise TimeoutError(f"prometheus targets not all up within {timeout} s: {states}")

    def _get(self, path: str, raw: bool = False) -> Any:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as response:
                data = response.read()
        except (urllib.error.URLError, OSError):
            return None
        return data if raw else json.loads(data)


@contextmanager
def running_prometheus(
    targets: Sequence[ScrapeTarget], workdir: Path, interval: str = "1s", rule_files: Sequence[Path] = ()
) -> Iterator[Prometheus]:
    """A started Prometheus scraping `targets` (config and data under `workdir`); stopped on exit.

    Skips the test when the binary is missing.
    """
    binary = require_prometheus()
    workdir.mkdir(parents=True, exist_ok=True)
    config = write_config(workdir / "prometheus.yml", targets, interval, rule_files)
    prometheus = Prometheus(binary, config, workdir)
    try:
        prometheus.start()
        yield prometheus
    finally:
        prometheus.stop()
