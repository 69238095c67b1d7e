"""The HybridInference Grafana dashboard: template variables, rows and panels (the one source of truth).

Rows: Latency, Throughput, KV transfer, Health, Plan vs reality. docs/monitoring.md explains each panel
and what to do when it looks wrong; a test keeps the two in step.
"""

from __future__ import annotations

from typing import Any

from monitoring.panels import Panel, Query, Row, layout
from monitoring.promql import (
    DASHBOARD_MATCHERS as M,
)
from monitoring.promql import (
    DASHBOARD_WINDOW as W,
)
from monitoring.promql import (
    INSTANCE,
    NAMESPACE,
    quantile,
    rate,
    ratio,
    series,
    sum_by,
)

UID = "hybrid-inference"
TITLE = "HybridInference"
# Metric whose label values feed the namespace / instance / model drop-downs.
VARIABLE_SOURCE = "hybrid_inference_requests_total"
OPERATOR = 'component="operator"'


def _quantiles(
    histogram: str, qs: tuple[float, ...], by: tuple[str, ...] = ("prefill",)
) -> tuple[Query, ...]:
    legend_suffix = "".join(f" {{{{{label}}}}}" for label in by)
    return tuple(Query(quantile(q, histogram, W, M, by=by), f"p{round(q * 100)}{legend_suffix}") for q in qs)


def latency_row() -> Row:
    """TTFT, inter-token and end-to-end latency quantiles, split by where the prompt was prefilled."""
    return Row(
        "Latency",
        (
            Panel(
                "Time to first token",
                "Request arrival to the first token leaving the decode worker; p50/p95/p99 by prefill site.",
                _quantiles("time_to_first_token_seconds", (0.5, 0.95, 0.99)),
                unit="s",
            ),
            Panel(
                "Inter-token latency",
                "Time between two tokens of one request (the decode step); p50/p95 by prefill site.",
                _quantiles("inter_token_latency_seconds", (0.5, 0.95)),
                unit="s",
            ),
            Panel(
                "End-to-end request latency",
                "Request arrival to its last token; p50/p95 by prefill site.",
                _quantiles("e2e_request_latency_seconds", (0.5, 0.95)),
                unit="s",
            ),
            Panel(
                "Queue time",
                "Admitted requests: time waiting for a scheduler slot (part of TTFT); p50/p95.",
                _quantiles("request_queue_time_seconds", (0.5, 0.95), by=()),
                unit="s",
            ),
        ),
    )


def throughput_row() -> Row:
    """Per-request decode speed, token rates and request rates."""
    tps_buckets = sum_by(("le",), f"increase({series('decode_tokens_per_second_bucket', M)}[{W}])")
    return Row(
        "Throughput",
        (
            Panel(
                "Decode tokens/s per request (distribution)",
                "How many requests decoded at which speed (tokens after the first / decode time).",
                (Query(tps_buckets, "{{le}}"),),
                unit="short",
                kind="heatmap",
            ),
            Panel(
                "Decode tokens/s per request (quantiles)",
                "p10 (the slow tail), p50 and p90 of per-request decode speed, by prefill site.",
                _quantiles("decode_tokens_per_second", (0.1, 0.5, 0.9)),
                unit="short",
            ),
            Panel(
                "Generated tokens/s",
                "Tokens sent to clients per second, all requests together, by prefill site.",
                (Query(sum_by(("prefill",), rate("generation_tokens_total", W, M)), "{{prefill}}"),),
                unit="short",
            ),
            Panel(
                "Prompt tokens/s",
                "Prompt tokens admitted by decode workers (by prefill site) and run by prefill workers.",
                (
                    Query(sum_by(("prefill",), rate("prompt_tokens_total", W, M)), "admitted, {{prefill}}"),
                    Query(sum_by((), rate("prefill_tokens_total", W, M)), "prefill worker"),
                ),
                unit="short",
            ),
            Panel(
                "Requests/s by outcome",
                "Completion requests per second: success, cancelled, rejected, invalid, unavailable, error.",
                (Query(sum_by(("outcome",), rate("requests_total", W, M)), "{{outcome}}"),),
                unit="reqps",
            ),
            Panel(
                "Finished requests/s by finish reason",
                "Successful requests per second by finish reason: stop (EOS, stop string) or length.",
                (
                    Query(
                        sum_by(("finished_reason",), rate("request_success_total", W, M)),
                        "{{finished_reason}}",
                    ),
                ),
                unit="reqps",
            ),
        ),
    )


def kv_link_row() -> Row:
    """The KV stream between prefill and decode workers: bytes, time, what is not hidden, frames."""
    exposed_share = ratio(
        sum_by((), rate("kv_exposed_transfer_seconds_sum", W, M)),
        sum_by((), rate("time_to_first_token_seconds_sum", W, M, 'prefill="remote"')),
    )
    per_token = {
        mode: ratio(
            sum_by((), rate("prefill_compute_seconds_sum", W, M, f'mode="{mode}"')),
            sum_by((), rate("prefill_compute_tokens_total", W, M, f'mode="{mode}"')),
        )
        for mode in ("layerwise", "bulk")
    }
    return Row(
        "KV transfer",
        (
            Panel(
                "KV transfer bytes/s",
                "KV cache bytes per second: received by decode workers and sent by prefill workers.",
                (
                    Query(sum_by((), rate("kv_transfer_bytes_total", W, M)), "received (decode)"),
                    Query(sum_by((), rate("kv_send_bytes_total", W, M)), "sent (prefill)"),
                ),
                unit="Bps",
            ),
            Panel(
                "KV transfer time",
                "First to last KV byte per request, next to the prefill forward pass it should hide behind.",
                (
                    *_quantiles("kv_transfer_seconds", (0.5, 0.95), by=()),
                    Query(quantile(0.5, "prefill_seconds", W, M), "prefill p50"),
                ),
                unit="s",
            ),
            Panel(
                "Exposed KV transfer time",
                "The part of the transfer not hidden behind prefill compute: it adds to TTFT.",
                _quantiles("kv_exposed_transfer_seconds", (0.5, 0.95), by=()),
                unit="s",
            ),
            Panel(
                "Exposed transfer share of TTFT",
                "Exposed transfer time / TTFT of remotely prefilled requests (sums over the window).",
                (Query(exposed_share, "exposed / TTFT"),),
                unit="percentunit",
            ),
            Panel(
                "KV goodput",
                "Bytes per second while the KV was on the wire (waits for compute excluded), by transport.",
                _quantiles("kv_goodput_bytes_per_second", (0.5, 0.05), by=("transport",)),
                unit="Bps",
            ),
            Panel(
                "Prefill compute slowdown while streaming",
                "Prefill seconds per prompt token, layerwise mode / bulk mode (1: streaming costs nothing).",
                (Query(f"({per_token['layerwise']}) / ({per_token['bulk']})", "layerwise / bulk"),),
                unit="short",
            ),
            Panel(
                "KV frames/s",
                "Wire frames (header, layer chunks, trailer) sent by prefill workers per second.",
                (Query(sum_by((), rate("kv_frames_sent_total", W, M)), "frames"),),
                unit="short",
            ),
        ),
    )


def health_row() -> Row:
    """Queues, fallbacks, errors and the operator's reconcile loop."""
    all_requests = sum_by((), rate("requests_total", W, M))
    return Row(
        "Health",
        (
            Panel(
                "Running and waiting requests",
                "Requests holding a scheduler slot, and requests queued for one.",
                (
                    Query(sum_by((), series("requests_running", M)), "running"),
                    Query(sum_by((), series("requests_waiting", M)), "waiting"),
                ),
            ),
            Panel(
                "Decode batch and KV cache usage",
                "Sequences decoded per forward pass (all decode pods), and the highest share of a decode "
                "worker's KV budget reserved by admitted requests (near 1: requests wait for KV memory).",
                (
                    Query(sum_by((), series("batch_size", M)), "batch size"),
                    Query(f"max ({series('kv_cache_usage_ratio', M)})", "KV usage (max)"),
                ),
            ),
            Panel(
                "Prefill fallbacks/s by reason",
                "Long prompts prefilled on the decode worker because remote prefill failed.",
                (Query(sum_by(("reason",), rate("prefill_fallback_total", W, M)), "{{reason}}"),),
                unit="reqps",
            ),
            Panel(
                "Error ratio",
                "Share of requests that failed on the server, and share rejected because the queue was full.",
                (
                    Query(
                        ratio(
                            sum_by((), rate("requests_total", W, M, 'outcome=~"error|unavailable"')),
                            all_requests,
                        ),
                        "server errors",
                    ),
                    Query(
                        ratio(sum_by((), rate("requests_total", W, M, 'outcome="rejected"')), all_requests),
                        "rejected",
                    ),
                ),
                unit="percentunit",
            ),
            Panel(
                "Operator reconciles/s",
                "Reconciles per second by the phase they left the resource in, and those that raised.",
                (
                    Query(sum_by(("phase",), rate("reconcile_total", W, OPERATOR)), "{{phase}}"),
                    Query(sum_by((), rate("reconcile_errors_total", W, OPERATOR)), "errors"),
                ),
                unit="ops",
            ),
            Panel(
                "Operator reconcile duration",
                "How long one reconcile takes (read spec, plan, apply children, write status); p50/p95.",
                (
                    Query(quantile(0.5, "reconcile_duration_seconds", W, OPERATOR), "p50"),
                    Query(quantile(0.95, "reconcile_duration_seconds", W, OPERATOR), "p95"),
                ),
                unit="s",
            ),
        ),
    )


def plan_row() -> Row:
    """Measured TTFT and decode speed next to what the planner predicted for this placement."""
    return Row(
        "Plan vs reality",
        (
            Panel(
                "TTFT: measured vs predicted",
                "Measured TTFT p50 by prefill site next to the planner's prediction for this placement.",
                (
                    *_quantiles("time_to_first_token_seconds", (0.5,)),
                    Query(f"max ({series('predicted_ttft_seconds', M)})", "predicted"),
                ),
                unit="s",
                width=12,
            ),
            Panel(
                "Decode tokens/s: measured vs predicted",
                "Measured per-request decode speed p50 next to the planner's prediction.",
                (
                    *_quantiles("decode_tokens_per_second", (0.5,)),
                    Query(f"max ({series('predicted_decode_tokens_per_second', M)})", "predicted"),
                ),
                unit="short",
                width=12,
            ),
        ),
    )


def rows() -> tuple[Row, ...]:
    """Every row of the dashboard, top to bottom."""
    return (latency_row(), throughput_row(), kv_link_row(), health_row(), plan_row())


def _variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": {"query": query, "refId": f"{name}-variable"},
        "definition": query,
        "refresh": 2,  # on time-range change
        "includeAll": True,
        "allValue": ".*",
        "multi": True,
        "sort": 1,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
    }


def variables() -> list[dict[str, Any]]:
    """Template variables: data source, then namespace -> instance (HybridInference name) -> model."""
    datasource = {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus"}
    in_namespace = f'{VARIABLE_SOURCE}{{{NAMESPACE}=~"$namespace"}}'
    in_instance = f'{VARIABLE_SOURCE}{{{NAMESPACE}=~"$namespace", {INSTANCE}=~"$instance"}}'
    return [
        datasource,
        _variable("namespace", "Namespace", f"label_values({VARIABLE_SOURCE}, {NAMESPACE})"),
        _variable("instance", "HybridInference", f"label_values({in_namespace}, {INSTANCE})"),
        _variable("model", "Model", f"label_values({in_instance}, model)"),
    ]


def dashboard() -> dict[str, Any]:
    """The whole dashboard as Grafana JSON (a dict ready for json.dumps)."""
    return {
        "uid": UID,
        "title": TITLE,
        "description": "Prefill on the compute node, decode on the bandwidth node: latency, throughput, KV.",
        "tags": ["hybrid-inference", "llm"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,  # shared crosshair
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "timezone": "browser",
        "templating": {"list": variables()},
        "annotations": {"list": []},
        "links": [],
        "panels": layout(rows()),
    }
