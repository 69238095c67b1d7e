"""HybridInference alert rules (the one source of truth): expressions, thresholds, texts, runbook links.

Thresholds appear in expressions as `{name}` fields, so one definition renders both the plain
Prometheus rules file (numbers filled in) and the chart's PrometheusRule (Helm values filled in).
Each alert's runbook is the section of docs/runbooks.md named after it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from monitoring.promql import ALERT_GROUPING as G
from monitoring.promql import COMPONENT, INSTANCE, NAMESPACE, quantile, rate, ratio, series, sum_by

GROUP_NAME = "hybrid-inference"
RUNBOOK_BASE_URL = "https://github.com/hybrid-inference/hybrid-inference/blob/main/docs/runbooks.md"

# Threshold name -> (default, Helm value key under monitoring.prometheusRule, what it means).
THRESHOLDS: dict[str, tuple[float, str, str]] = {
    "ttft_slo_seconds": (2.0, "ttftP95SloSeconds", "TTFT p95 above this many seconds fires TTFTAboveSLO"),
    "decode_factor": (0.7, "decodeBelowPredictionFactor", "measured decode TPS p50 below this x predicted"),
    "fallback_ratio": (0.1, "fallbackRatio", "fallbacks per request above this share fires FallbackRateHigh"),
}


@dataclass(frozen=True)
class Alert:
    """One alerting rule; `expr` may hold `{threshold}` fields, texts may use Prometheus' $labels."""

    name: str
    expr: str
    for_: str  # how long the condition must hold before the alert fires
    severity: str  # warning | critical
    summary: str
    description: str


def _who() -> str:
    return "{{ $labels.hybridinference }} in {{ $labels.namespace }}"


def _alerts() -> tuple[Alert, ...]:
    window = "5m"
    ttft_p95 = quantile(0.95, "time_to_first_token_seconds", window, by=G)
    tps_p50 = quantile(0.5, "decode_tokens_per_second", "10m", by=G)
    predicted_tps = f"max by ({', '.join(G)}) ({series('predicted_decode_tokens_per_second')} > 0)"
    fallbacks = sum_by(G, rate("prefill_fallback_total", window))
    unreachable = sum_by(G, rate("prefill_fallback_total", window, 'reason=~"unreachable|peer_down|stalled"'))
    prefill_down = f'max by ({NAMESPACE}, {INSTANCE}) (up{{{COMPONENT}="prefill"}}) == 0'
    tokens = sum_by(G, rate("generation_tokens_total", window))
    reconcile_errors = sum_by((), rate("reconcile_errors_total", "10m", f'{COMPONENT}="operator"'))
    leaders = sum_by((), series("operator_leader", f'{COMPONENT}="operator"'))
    return (
        Alert(
            "HybridInferenceTTFTAboveSLO",
            f"{ttft_p95} > {{ttft_slo_seconds}}",
            "10m",
            "warning",
            "TTFT p95 of " + _who() + " is above the SLO",
            "Time to first token p95 of model {{ $labels.model }} is {{ $value | humanizeDuration }}, "
            "above the SLO of {ttft_slo_seconds} s.",
        ),
        Alert(
            "HybridInferenceDecodeBelowPrediction",
            f"{tps_p50} < on ({', '.join(G)}) ({{decode_factor}} * {predicted_tps})",
            "15m",
            "warning",
            "Decode of " + _who() + " is slower than planned",
            "Per-request decode speed p50 of model {{ $labels.model }} is {{ $value | humanize }} tokens/s, "
            "below {decode_factor} x the planner's prediction.",
        ),
        Alert(
            "HybridInferenceFallbackRateHigh",
            f"{ratio(fallbacks, sum_by(G, rate('requests_total', window)))} > {{fallback_ratio}}",
            "5m",
            "warning",
            "Many requests of " + _who() + " fall back to local prefill",
            "{{ $value | humanizePercentage }} of requests for model {{ $labels.model }} prefilled on the "
            "decode worker because remote prefill failed (threshold {fallback_ratio}).",
        ),
        Alert(
            "HybridInferencePrefillUnreachable",
            f"({unreachable} > 0) or ({prefill_down})",
            "2m",
            "critical",
            "The prefill worker of " + _who() + " is unreachable",
            "Decode workers cannot reach their prefill peer (or Prometheus cannot scrape it): long prompts "
            "prefill locally (slow TTFT) or fail, depending on spec.serving.fallback.",
        ),
        Alert(
            "HybridInferenceStalled",
            f"({sum_by(G, series('requests_waiting'))} > 0) unless on ({', '.join(G)}) ({tokens} > 0)",
            "5m",
            "critical",
            "Requests of " + _who() + " wait but no tokens are generated",
            "{{ $value }} requests of model {{ $labels.model }} are queued and the decode worker generated "
            "no token in the last 5 minutes.",
        ),
        Alert(
            "HybridInferenceReconcileErrors",
            f"{reconcile_errors} > 0",
            "15m",
            "warning",
            "The HybridInference operator keeps failing to reconcile",
            "The operator reported {{ $value | humanize }} reconcile errors per second over the last 10 "
            "minutes; resources may not match their spec.",
        ),
        Alert(
            "HybridInferenceOperatorLeader",
            f"{leaders} != 1",
            "5m",
            "critical",
            "Not exactly one HybridInference operator replica reconciles",
            "{{ $value }} scraped operator replicas report that they reconcile (expected 1): with 0 no "
            "resource follows its spec, with more two replicas write the same objects.",
        ),
    )


ALERTS: tuple[Alert, ...] = _alerts()


def anchor(alert_name: str) -> str:
    """The docs/runbooks.md anchor of an alert's section (its heading is the alert name)."""
    return alert_name.lower()


def rule(
    alert: Alert, values: Mapping[str, str], runbook_base: str, for_: str | None = None
) -> dict[str, Any]:
    """One Prometheus alerting rule with `values` filled into its `{threshold}` fields."""
    return {
        "alert": alert.name,
        "expr": _fill(alert.expr, values),
        "for": for_ or alert.for_,
        "labels": {"severity": alert.severity},
        "annotations": {
            "summary": alert.summary,
            "description": _fill(alert.description, values),
            "runbook_url": f"{runbook_base}#{anchor(alert.name)}",
        },
    }


def _fill(text: str, values: Mapping[str, str]) -> str:
    """Fill `{threshold}` fields while leaving Prometheus' `{{ ... }}` templates alone."""
    for name, value in values.items():
        text = text.replace("{" + name + "}", value)
    return text


def default_values() -> dict[str, str]:
    """Every threshold at its default, as PromQL number literals."""
    return {name: f"{default:g}" for name, (default, _key, _doc) in THRESHOLDS.items()}


def rule_groups(
    values: Mapping[str, str] | None = None,
    runbook_base: str = RUNBOOK_BASE_URL,
    for_: str | None = None,
) -> dict[str, Any]:
    """The `groups:` document of a Prometheus rules file; `for_` overrides every alert's (tests)."""
    filled = dict(values or default_values())
    rules = [rule(alert, filled, runbook_base, for_) for alert in ALERTS]
    return {"groups": [{"name": GROUP_NAME, "rules": rules}]}
