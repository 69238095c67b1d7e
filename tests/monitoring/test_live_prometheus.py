"""Every dashboard query and alert, run by a real Prometheus scraping real workers after real traffic.

Two HybridInference "instances" on loopback, labelled as the chart's PodMonitors would label them:
`local-serve` is a `hybrid-inference serve` (prefill + decode worker); `dead-peer` is a lone decode
worker whose prefill peer does not exist (with --fallback local, so its long prompts fall back and
Prometheus' scrape of that peer fails). Prometheus scrapes every second and evaluates the alert rules
(a variant with `for: 1s`) every second.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import live_traffic
import pytest
import yaml
from support.loopback import free_ports
from support.prometheus import Prometheus, require_prometheus
from support.serve import RunningServe, running_serve

from monitoring.alerts import rule_groups
from monitoring.dashboard import dashboard
from monitoring.queries import alert_queries, expand, panel_queries, variable_selectors

pytestmark = pytest.mark.slow

MIN_REMOTE_TOKENS = "16"
PREDICTED = ("--predicted-ttft-seconds=0.5", "--predicted-decode-tokens-per-second=40")
# Panel targets no traffic in this test fills: no operator runs, no request fails on the server, and
# every remote prefill is layerwise (the slowdown panel needs bulk ones in the same window too).
EMPTY_BY_DESIGN = {
    "Prefill compute slowdown while streaming / layerwise / bulk",
    "Operator reconciles/s / {{phase}}",
    "Operator reconciles/s / errors",
    "Operator reconcile duration / p50",
    "Operator reconcile duration / p95",
    "Error ratio / server errors",
    "Error ratio / rejected",
}


@dataclass
class Scene:
    """The running workers, the Prometheus scraping them, and the traffic they got."""

    prometheus: Prometheus
    serve: live_traffic.Traffic
    fallback: live_traffic.Traffic
    start: float  # unix time before the first request
    serve_metrics: str = ""  # local-serve's decode /metrics once Prometheus scraped all its traffic


def _target(address: str, instance: str, component: str) -> dict[str, Any]:
    labels = {"namespace": "monitoring-test", "hybridinference": instance, "component": component}
    return {"targets": [address], "labels": labels}


def _write_config(workdir: Path, serve: RunningServe, dead_decode: int, dead_prefill: int) -> Path:
    rules = workdir / "rules.yaml"
    rules.write_text(yaml.safe_dump(rule_groups(for_="1s")))
    static = [
        _target(f"127.0.0.1:{serve.api_port}", "local-serve", "decode"),
        _target(f"127.0.0.1:{serve.prefill_metrics_port}", "local-serve", "prefill"),
        _target(f"127.0.0.1:{dead_decode}", "dead-peer", "decode"),
        _target(f"127.0.0.1:{dead_prefill}", "dead-peer", "prefill"),  # nothing listens: up == 0
    ]
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [{"job_name": "hybrid-inference", "static_configs": static}],
    }
    path = workdir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextmanager
def dead_peer_decode(model_dir: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, int]]:
    """Start a decode worker whose prefill peer is a port nothing listens on; stop it on exit.

    Yields (process, its API port, the dead peer's port) without waiting for readiness, so the
    caller can start `serve` meanwhile.
    """
    port, dead = free_ports(2)
    argv = [sys.executable, "-m", "hybrid_workers", "decode", "--model", str(model_dir)]
    argv += ["--device", "cpu", "--dtype", "float32", "--port", str(port), "--prefill", f"127.0.0.1:{dead}"]
    argv += ["--fallback", "local", "--remote-prefill-min-tokens", MIN_REMOTE_TOKENS, *PREDICTED]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        yield process, port, dead
    finally:
        process.terminate()
        process.wait(30)


def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"decode worker exited with {process.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"{url} not ready in {timeout} s")


@pytest.fixture(scope="module")
def scene(tiny_model_dir: Path, tmp_path_factory: Any) -> Iterator[Scene]:
    """Workers up, Prometheus scraping them, two batches of traffic sent and scraped."""
    binary = require_prometheus()
    workdir = tmp_path_factory.mktemp("prometheus")
    decode_args = [f"--decode-arg={flag}" for flag in PREDICTED]
    with (
        dead_peer_decode(tiny_model_dir) as (lone, lone_port, dead_port),
        running_serve(
            tiny_model_dir, "--remote-prefill-min-tokens", MIN_REMOTE_TOKENS, *decode_args
        ) as serve,
    ):
        _wait_ready(f"http://127.0.0.1:{lone_port}/ready", lone)
        prometheus = Prometheus(binary, _write_config(workdir, serve, lone_port, dead_port), workdir)
        prometheus.start()
        try:
            yield _play(prometheus, serve.base_url, f"http://127.0.0.1:{lone_port}")
        finally:
            prometheus.stop()


def _play(prometheus: Prometheus, serve_url: str, fallback_url: str) -> Scene:
    """Send two batches a few scrapes apart (so rates see increases), then wait until all is scraped."""
    scene = Scene(prometheus, live_traffic.Traffic(), live_traffic.Traffic(), time.time())
    serve_api, fallback_api = live_traffic.client(serve_url), live_traffic.client(fallback_url)
    serve_model, fallback_model = live_traffic.model_id(serve_api), live_traffic.model_id(fallback_api)
    prometheus.wait_for('count(up{hybridinference="local-serve"} == 1)', lambda v: v == 2, timeout=60)
    for _ in range(2):
        live_traffic.serve_batch(serve_api, serve_model, scene.serve)
        live_traffic.fallback_batch(fallback_api, fallback_model, scene.fallback)
        time.sleep(2)  # two scrapes between batches
    ttft_count = 'sum(hybrid_inference_time_to_first_token_seconds_count{hybridinference="local-serve"})'
    prometheus.wait_for(ttft_count, lambda v: v == scene.serve.ok, timeout=30)
    with urllib.request.urlopen(f"{serve_url}/metrics", timeout=10) as response:  # no more traffic: final
        scene.serve_metrics = response.read().decode()
    fallbacks = 'sum(hybrid_inference_prefill_fallback_total{hybridinference="dead-peer"})'
    prometheus.wait_for(fallbacks, lambda v: v == scene.fallback.long_prompts, timeout=30)
    return scene


def query_range(prometheus: Prometheus, expr: str, start: float) -> dict[str, Any]:
    """What Grafana asks Prometheus for a panel: /api/v1/query_range over the test, 1 s steps."""
    params = {"query": expr, "start": f"{start:.3f}", "end": f"{time.time():.3f}", "step": "1"}
    url = f"{prometheus.url}/api/v1/query_range?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return dict(json.load(response))
    except urllib.error.HTTPError as exc:  # 400 with Prometheus' parse error in the body
        return dict(json.load(exc))


def _has_numbers(result: list[dict[str, Any]]) -> bool:
    return any(value not in ("NaN", "+Inf", "-Inf") for series in result for _, value in series["values"])


def test_every_dashboard_query_runs_and_traffic_fills_the_panels(scene: Scene) -> None:
    problems, empty = [], []
    for query in panel_queries(dashboard()):
        body = query_range(scene.prometheus, expand(query.expr), scene.start)
        if body.get("status") != "success":
            problems.append(f"{query.origin}: {body.get('error')}")
        elif query.origin not in EMPTY_BY_DESIGN and not _has_numbers(body["data"]["result"]):
            empty.append(query.origin)
    assert problems == []
    assert empty == []


def test_dashboard_variables_list_both_instances(scene: Scene) -> None:
    found = {}
    for name, selector, label in variable_selectors(dashboard()):
        params = urllib.parse.urlencode({"match[]": expand(selector)})
        url = f"{scene.prometheus.url}/api/v1/label/{label}/values?{params}"
        with urllib.request.urlopen(url, timeout=10) as response:
            found[name] = json.load(response)["data"]
    assert found["namespace"] == ["monitoring-test"]
    assert found["instance"] == ["dead-peer", "local-serve"]
    assert len(found["model"]) == 1


def test_ttft_from_prometheus_is_what_the_worker_measured(scene: Scene) -> None:
    # Exact, not timed: Prometheus' sum, count and p95 of the TTFT histogram equal what the decode
    # worker's own /metrics exposes (summed over its series, as the dashboard's queries do), and the
    # count is the number of requests the client finished.
    where = 'hybridinference="local-serve"'
    name = "hybrid_inference_time_to_first_token_seconds"
    total = scene.prometheus.value(f"sum({name}_sum{{{where}}})")
    count = scene.prometheus.value(f"sum({name}_count{{{where}}})")
    p95 = scene.prometheus.value(f"histogram_quantile(0.95, sum by (le) ({name}_bucket{{{where}}}))")
    exposed = _histogram(scene.serve_metrics, name)
    assert count == exposed["count"] == scene.serve.ok
    assert total == pytest.approx(exposed["sum"], rel=1e-9)
    assert p95 == pytest.approx(_quantile(0.95, exposed["buckets"]), rel=1e-9)


def _histogram(text: str, name: str) -> dict[str, Any]:
    """A histogram's sum, count and cumulative buckets [(le, count)] over all its series in `text`."""
    from prometheus_client.parser import text_string_to_metric_families

    found: dict[str, Any] = {"sum": 0.0, "count": 0.0, "buckets": {}}
    family = next(f for f in text_string_to_metric_families(text) if f.name == name)
    for sample in family.samples:
        if sample.name == f"{name}_sum":
            found["sum"] += sample.value
        elif sample.name == f"{name}_count":
            found["count"] += sample.value
        elif sample.name == f"{name}_bucket":
            le = float(sample.labels["le"])
            found["buckets"][le] = found["buckets"].get(le, 0.0) + sample.value
    found["buckets"] = sorted(found["buckets"].items())
    return found


def _quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' histogram_quantile over cumulative buckets: linear inside the bucket holding rank q."""
    rank, lower, below = q * buckets[-1][1], 0.0, 0.0
    for upper, cumulative in buckets:
        if cumulative >= rank:
            if upper == float("inf"):
                return lower
            return lower + (upper - lower) * (rank - below) / (cumulative - below)
        lower, below = upper, cumulative
    raise AssertionError(f"no bucket reaches rank {rank}: {buckets}")


def test_every_alert_expression_evaluates(scene: Scene) -> None:
    for query in alert_queries(rule_groups()):
        body = query_range(scene.prometheus, query.expr, scene.start)
        assert body.get("status") == "success", (query.origin, body.get("error"))


def _firing(prometheus: Prometheus) -> set[tuple[str, str]]:
    with urllib.request.urlopen(f"{prometheus.url}/api/v1/alerts", timeout=10) as response:
        alerts = json.load(response)["data"]["alerts"]
    return {
        (a["labels"]["alertname"], a["labels"].get("hybridinference", ""))
        for a in alerts
        if a["state"] == "firing"
    }


def test_fallbacks_fire_the_fallback_and_unreachable_alerts_only_for_the_dead_peer(scene: Scene) -> None:
    expected = {
        ("HybridInferenceFallbackRateHigh", "dead-peer"),
        ("HybridInferencePrefillUnreachable", "dead-peer"),
    }
    deadline, firing = time.monotonic() + 30, set()
    while time.monotonic() < deadline and not expected <= firing:
        firing = _firing(scene.prometheus)
        time.sleep(0.5)
    assert expected <= firing
    assert not {alert for alert in firing if alert[1] == "local-serve" and "Fallback" in alert[0]}
    assert ("HybridInferenceStalled", "dead-peer") not in firing


def test_choosing_an_instance_filters_the_panels(scene: Scene) -> None:
    fallbacks = next(q for q in panel_queries(dashboard()) if q.origin.startswith("Prefill fallbacks/s"))
    seen = {}
    for instance in ("local-serve", "dead-peer"):
        values = {"namespace": "monitoring-test", "instance": instance, "model": ".*"}
        body = query_range(scene.prometheus, expand(fallbacks.expr, values), scene.start)
        # Every reason's series exists from the start at 0 (so rate() sees the first event): a panel
        # "shows" a reason when one of its points is above zero.
        seen[instance] = sorted(
            series["metric"]["reason"]
            for series in body["data"]["result"]
            if any(float(value) > 0 for _, value in series["values"])
        )
    # The dead peer's breaker may open before the request sees the refused connection (peer_down)
    assert seen["local-serve"] == [] and seen["dead-peer"] in (["unreachable"], ["peer_down"])
