"""Every metric a dashboard query or an alert reads is one the workers or the operator really export."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any

import pytest
from prometheus_client import REGISTRY, CollectorRegistry

from monitoring.queries import (
    NamedQuery,
    alert_queries,
    expand,
    metric_names,
    panel_queries,
    variable_selectors,
)

# Series Prometheus itself writes for every scrape target.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
OPERATOR_SCOPE = 'component="operator"'  # how the dashboard and the rules select the operator's series
# Sample names a metric family of each type exposes (prometheus-client's text exposition).
SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "info": ("_info",),
}


def exposed_names(registry: CollectorRegistry) -> set[str]:
    """Sample names a registry's /metrics can show, including labelled metrics with no sample yet."""
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
    return names


def used_queries(dashboard: dict[str, Any], rules: dict[str, Any]) -> list[NamedQuery]:
    """Panel queries, variable selectors and alert expressions, expanded as Grafana would."""
    variables = [
        NamedQuery(f"variable {name}", selector) for name, selector, _ in variable_selectors(dashboard)
    ]
    everything = [*panel_queries(dashboard), *variables, *alert_queries(rules)]
    return [NamedQuery(q.origin, expand(q.expr)) for q in everything if q.expr]


def unknown_names(queries: Iterable[NamedQuery], known: set[str]) -> list[str]:
    """`origin: name` for every metric a query reads that is not in `known`."""
    return sorted(
        f"{q.origin}: {name}" for q in queries for name in metric_names(q.expr) - known - PROMETHEUS_SERIES
    )


def test_worker_queries_read_only_metrics_the_workers_export(
    dashboard_json: dict[str, Any], rules: dict[str, Any]
) -> None:
    importlib.import_module("hybrid_workers.metrics")  # registers both workers' metrics in REGISTRY
    queries = [q for q in used_queries(dashboard_json, rules) if OPERATOR_SCOPE not in q.expr]
    assert len(queries) > 40
    assert unknown_names(queries, exposed_names(REGISTRY)) == []


def test_operator_queries_read_only_metrics_the_operator_exports(
    dashboard_json: dict[str, Any], rules: dict[str, Any]
) -> None:
    metrics = pytest.importorskip(
        "hybrid_operator.metrics", reason="the operator's metrics are not in this tree"
    )
    registry = getattr(metrics, "REGISTRY", REGISTRY)
    queries = [q for q in used_queries(dashboard_json, rules) if OPERATOR_SCOPE in q.expr]
    assert len(queries) >= 5
    assert unknown_names(queries, exposed_names(registry)) == []


def test_a_misspelled_metric_is_reported() -> None:
    registry = CollectorRegistry()
    from prometheus_client import Histogram

    Histogram("hybrid_inference_time_to_first_token_seconds", "TTFT", ["model"], registry=registry)
    typo = NamedQuery("panel", "histogram_quantile(0.5, rate(hybrid_inference_ttft_seconds_bucket[1m]))")
    right = NamedQuery("panel", "rate(hybrid_inference_time_to_first_token_seconds_count[1m])")
    assert unknown_names([typo, right], exposed_names(registry)) == [
        "panel: hybrid_inference_ttft_seconds_bucket"
    ]
