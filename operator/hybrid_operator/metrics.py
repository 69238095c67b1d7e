"""Operator metrics (docs/architecture.md "Metrics"): reconcile passes, errors, duration; leadership."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram

RECONCILE_TOTAL = Counter(
    "hybrid_inference_reconcile_total",
    "Reconcile passes, by what triggered them and the phase they ended in",
    ["trigger", "phase"],
)
RECONCILE_ERRORS_TOTAL = Counter(
    "hybrid_inference_reconcile_errors_total",
    "Reconcile passes that raised (API errors, bugs); kopf retries them",
    ["trigger"],
)
RECONCILE_DURATION_SECONDS = Histogram(
    "hybrid_inference_reconcile_duration_seconds",
    "Wall time of one reconcile pass",
    ["trigger"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
LEADER = Gauge(
    "hybrid_inference_operator_leader",
    "1 while this operator process reconciles (it holds the leader Lease, or runs without election); "
    "0 while it stands by",
)


@contextmanager
def observe(trigger: str) -> Iterator[dict[str, str]]:
    """Time a pass; the caller sets `outcome["phase"]`; an exception counts as an error and propagates."""
    outcome = {"phase": "Unknown"}
    start = time.perf_counter()
    try:
        yield outcome
    except BaseException:
        RECONCILE_ERRORS_TOTAL.labels(trigger).inc()
        raise
    finally:
        RECONCILE_DURATION_SECONDS.labels(trigger).observe(time.perf_counter() - start)
    RECONCILE_TOTAL.labels(trigger, outcome["phase"]).inc()
