"""PromQL building blocks shared by the dashboard and the alert rules: label names, selectors, quantiles.

Every query is built here from metric names without their `hybrid_inference_` prefix, so a renamed
metric is one edit, and the metric-name test can check each query against the workers' registries.
"""

from __future__ import annotations

from collections.abc import Sequence

PREFIX = "hybrid_inference_"

# Target labels Prometheus attaches when it scrapes a worker or the operator. The chart's PodMonitors
# relabel the pod's namespace and its app.kubernetes.io/instance and app.kubernetes.io/component labels
# into these; a hand-written scrape config must set the same three (see docs/monitoring.md).
NAMESPACE = "namespace"
INSTANCE = "hybridinference"  # the name of the HybridInference resource
COMPONENT = "component"  # prefill | decode | operator

# Labels an alert keeps: which HybridInference, where, serving which model.
ALERT_GROUPING: tuple[str, ...] = (NAMESPACE, INSTANCE, "model")

# Matchers of the dashboard's template variables (regex matchers, so "All" = ".*" works).
DASHBOARD_MATCHERS = f'{NAMESPACE}=~"$namespace", {INSTANCE}=~"$instance", model=~"$model"'
DASHBOARD_WINDOW = "$__rate_interval"


def series(name: str, *matchers: str) -> str:
    """`hybrid_inference_<name>{m1, m2}`; empty matchers are dropped, no braces when none are left."""
    kept = [m for m in matchers if m]
    body = "{" + ", ".join(kept) + "}" if kept else ""
    return f"{PREFIX}{name}{body}"


def rate(name: str, window: str, *matchers: str) -> str:
    """Per-second rate of a counter (or a histogram's `_bucket`/`_sum`/`_count`) over `window`."""
    return f"rate({series(name, *matchers)}[{window}])"


def sum_by(labels: Sequence[str], expr: str) -> str:
    """`sum by (labels) (expr)`, or a plain `sum (expr)` when no labels are given."""
    return f"sum by ({', '.join(labels)}) ({expr})" if labels else f"sum ({expr})"


def quantile(q: float, histogram: str, window: str, *matchers: str, by: Sequence[str] = ()) -> str:
    """The q-quantile of a histogram over `window`, per group of `by` (buckets summed across pods)."""
    buckets = sum_by(("le", *by), rate(histogram + "_bucket", window, *matchers))
    return f"histogram_quantile({q}, {buckets})"


def ratio(numerator: str, denominator: str) -> str:
    """`(numerator) / (denominator)`; 0/0 gives NaN, which Grafana draws as a gap and alerts ignore."""
    return f"({numerator}) / ({denominator})"
