"""Prometheus metrics of both workers (docs/architecture.md, "Metrics"): names, labels, buckets in one place.

Every metric is prefixed `hybrid_inference_` and carries its unit in its name. Labels:
`model` (the served model name) on all of them, `prefill` (`remote` | `local`, where the prompt's
prefill ran) on the per-request decode-worker metrics, `outcome` on `requests_total` and `reason` on
`prefill_fallback_total`. The objects live in prometheus-client's default registry, so `/metrics`
(``exposition()``) also shows the process collectors (CPU, memory, open files).

Buckets are chosen to resolve both a 2-core CPU demo (TTFT of seconds, a few tokens per second) and a
GPU cluster (TTFT of tens of milliseconds, hundreds of tokens per second).
"""

from __future__ import annotations

from enum import StrEnum

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest

PREFIX = "hybrid_inference_"


class PrefillSite(StrEnum):
    """Value of the `prefill` label: where a request's prompt was prefilled."""

    REMOTE = "remote"
    LOCAL = "local"


class RequestOutcome(StrEnum):
    """Value of the `outcome` label of `requests_total`."""

    SUCCESS = "success"  # finished with finish_reason stop or length
    CANCELLED = "cancelled"  # the client went away before the end
    REJECTED = "rejected"  # the waiting queue was full (HTTP 429)
    INVALID = "invalid"  # bad request (HTTP 4xx)
    UNAVAILABLE = "unavailable"  # remote prefill failed with --fallback fail (HTTP 503)
    ERROR = "error"  # anything else that went wrong on the server


class FallbackReason(StrEnum):
    """Value of the `reason` label of `prefill_fallback_total`: why a long prompt prefilled locally."""

    UNREACHABLE = "unreachable"  # the prefill worker could not be reached
    ERROR = "error"  # it answered with an error
    TIMEOUT = "timeout"  # it did not finish within --prefill-timeout
    PROTOCOL = "protocol"  # it sent KV the receiver refused (version, fingerprint, sizes, checksum)
    STALLED = "stalled"  # its transfer made no progress for --prefill-stall-timeout
    PEER_DOWN = "peer_down"  # not attempted: the breaker is open (the worker is down or hangs)
    INCOMPATIBLE = "incompatible"  # not attempted: the handshake refused it (model, dtype, version)


class RemoteOutcome(StrEnum):
    """Value of the `outcome` label of `remote_prefill_total`: how a remote prefill attempt ended."""

    SUCCESS = "success"  # the KV arrived
    FAILED = "failed"  # it failed (the fallback policy applied)
    CANCELLED = "cancelled"  # the client went away meanwhile (not a fallback)


# Seconds: 5 ms (GPU, short prompt) .. 5 min (CPU, long prompt on a slow node).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 60, 120, 300)
# Seconds between two tokens: 1 ms (GPU, tiny model) .. 5 s (CPU, big model).
INTER_TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5)
# Whole requests: 50 ms .. 20 min.
E2E_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 60, 120, 300, 600, 1200)
# Tokens per second of one request's decode phase: 0.5 (CPU, 8B) .. 2000 (GPU, tiny model).
TPS_BUCKETS = (0.5, 1, 2, 5, 10, 15, 20, 30, 40, 50, 75, 100, 150, 200, 300, 500, 1000, 2000)
# KV transfer seconds: 1 ms (one layer, loopback) .. 1 min (GiBs over a slow link).
TRANSFER_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

_MODEL = ("model",)
_PER_REQUEST = ("model", "prefill")

# ---- decode worker ---------------------------------------------------------------------------------
time_to_first_token_seconds = Histogram(
    PREFIX + "time_to_first_token_seconds",
    "Request arrival to the first generated token leaving the server",
    _PER_REQUEST,
    buckets=LATENCY_BUCKETS,
)
inter_token_latency_seconds = Histogram(
    PREFIX + "inter_token_latency_seconds",
    "Time between two consecutive generated tokens of one request",
    _PER_REQUEST,
    buckets=INTER_TOKEN_BUCKETS,
)
e2e_request_latency_seconds = Histogram(
    PREFIX + "e2e_request_latency_seconds",
    "Request arrival to its last token (finished requests only)",
    _PER_REQUEST,
    buckets=E2E_BUCKETS,
)
decode_tokens_per_second = Histogram(
    PREFIX + "decode_tokens_per_second",
    "Per request: tokens after the first divided by the time from first to last token",
    _PER_REQUEST,
    buckets=TPS_BUCKETS,
)
prompt_tokens_total = Counter(
    PREFIX + "prompt_tokens_total", "Prompt tokens of admitted requests", _PER_REQUEST
)
generation_tokens_total = Counter(
    PREFIX + "generation_tokens_total", "Tokens generated (sent to clients)", _PER_REQUEST
)
requests_total = Counter(
    PREFIX + "requests_total",
    "Completion requests by outcome (see metrics.RequestOutcome)",
    ("model", "outcome"),
)
requests_running = Gauge(PREFIX + "requests_running", "Requests holding a scheduler slot now", _MODEL)
requests_waiting = Gauge(PREFIX + "requests_waiting", "Requests queued for a scheduler slot now", _MODEL)
# Capacity of the batched decode engine (decode/batch_loop.py, decode/kv_budget.py).
batch_size = Gauge(
    PREFIX + "batch_size", "Sequences in the decode batch now (one forward pass per step)", _MODEL
)
kv_cache_usage_ratio = Gauge(
    PREFIX + "kv_cache_usage_ratio",
    "KV cache bytes reserved by admitted sequences (prompt + max_tokens each) / --kv-cache-bytes",
    _MODEL,
)
kv_cache_budget_bytes = Gauge(
    PREFIX + "kv_cache_budget_bytes", "KV cache budget of the decode worker (--kv-cache-bytes)", _MODEL
)
prefill_fallback_total = Counter(
    PREFIX + "prefill_fallback_total",
    "Long prompts prefilled locally because remote prefill failed (see metrics.FallbackReason)",
    ("model", "reason"),
)
remote_prefill_total = Counter(
    PREFIX + "remote_prefill_total",
    "Remote prefill attempts by outcome (see metrics.RemoteOutcome); requests the breaker kept local "
    "are not attempts",
    ("model", "outcome"),
)
prefill_peer_state = Gauge(
    PREFIX + "prefill_peer_state",
    "1 for the prefill worker's current state as the decode worker sees it "
    "(connecting, ready, unreachable, stalled, incompatible), 0 for the others",
    ("model", "state"),
)
kv_transfer_seconds = Histogram(
    PREFIX + "kv_transfer_seconds",
    "Remote prefill: time from the first to the last KV byte received",
    _MODEL,
    buckets=TRANSFER_BUCKETS,
)
kv_exposed_transfer_seconds = Histogram(
    PREFIX + "kv_exposed_transfer_seconds",
    "Remote prefill: KV transfer time not hidden behind prefill compute (adds to TTFT)",
    _MODEL,
    buckets=TRANSFER_BUCKETS,
)
kv_transfer_bytes_total = Counter(
    PREFIX + "kv_transfer_bytes_total", "KV cache bytes received from prefill workers (wire size)", _MODEL
)
predicted_ttft_seconds = Gauge(
    PREFIX + "predicted_ttft_seconds",
    "TTFT the planner predicted for this placement (--predicted-ttft-seconds); plan vs reality",
    _MODEL,
)
predicted_decode_tokens_per_second = Gauge(
    PREFIX + "predicted_decode_tokens_per_second",
    "Decode tokens/s the planner predicted (--predicted-decode-tokens-per-second); plan vs reality",
    _MODEL,
)

# ---- prefill worker --------------------------------------------------------------------------------
prefill_seconds = Histogram(
    PREFIX + "prefill_seconds",
    "Prefill worker: forward pass over one prompt, all layers",
    _MODEL,
    buckets=LATENCY_BUCKETS,
)
prefill_tokens_total = Counter(
    PREFIX + "prefill_tokens_total", "Prefill worker: prompt tokens prefilled", _MODEL
)
kv_frames_sent_total = Counter(
    PREFIX + "kv_frames_sent_total", "Prefill worker: KV wire frames sent (header, layer, trailer)", _MODEL
)
kv_send_bytes_total = Counter(
    PREFIX + "kv_send_bytes_total", "Prefill worker: KV tensor bytes sent (wire size)", _MODEL
)


def zero_labelled_series(model: str) -> None:
    """Create every outcome and fallback-reason series of `model` at 0.

    A labelled counter appears only at its first increment, so `rate()` and `increase()` would miss
    that first event (and alerts on it would never see a change); started at 0 they see every one.
    """
    for outcome in RequestOutcome:
        requests_total.labels(model, outcome.value)
    for reason in FallbackReason:
        prefill_fallback_total.labels(model, reason.value)
    for remote in RemoteOutcome:
        remote_prefill_total.labels(model, remote.value)


def exposition() -> tuple[bytes, str]:
    """The text exposition of every metric in this process and its content type, for `GET /metrics`."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def sample_value(name: str, labels: dict[str, str] | None = None) -> float:
    """Current value of one sample (e.g. `hybrid_inference_requests_total`), 0.0 when it has none yet.

    For tests and benchmarks that compare a metric before and after some requests.
    """
    value = REGISTRY.get_sample_value(name, labels or {})
    return 0.0 if value is None else value
