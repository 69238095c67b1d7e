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

import importlib.metadata
from enum import StrEnum

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, Info, generate_latest

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


# Values of the `finished_reason` label of `request_success_total` (OpenAI's finish_reason).
FINISH_REASONS = ("stop", "length")


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
# TTFT: dense from 50 ms to 10 s, where targets and headline percentiles live (no 1 -> 2.5 -> 5 jumps).
TTFT_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 1.5, 2, 3, 4, 6, 8, 10,
    15, 20, 30, 60, 120, 300,
)  # fmt: skip
# Seconds waiting for a scheduler slot: 1 ms .. 10 min.
QUEUE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 60, 120, 300, 600)
# Tokens per request (prompt or generation): 1 .. 128k, 1-2-5 steps (as vLLM's).
LENGTH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000, 131072)
# Seconds between two tokens: 1 ms (GPU, tiny model) .. 5 s (CPU, big model).
INTER_TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5)
# Whole requests: 50 ms .. 20 min.
E2E_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 60, 120, 300, 600, 1200)
# Tokens per second of one request's decode phase: 0.5 (CPU, 8B) .. 2000 (GPU, tiny model).
TPS_BUCKETS = (0.5, 1, 2, 5, 10, 15, 20, 30, 40, 50, 75, 100, 150, 200, 300, 500, 1000, 2000)
# KV transfer seconds: 1 ms (one layer, loopback) .. 1 min (GiBs over a slow link).
TRANSFER_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

# Bytes per second of one KV transfer: 1 MB/s (a slow WAN) .. 20 GB/s (100 GbE, Thunderbolt 5).
GOODPUT_BUCKETS = (1e6, 5e6, 1e7, 2.5e7, 5e7, 1e8, 2.5e8, 5e8, 1e9, 2e9, 4e9, 8e9, 2e10)

_MODEL = ("model",)
_PER_REQUEST = ("model", "prefill")

# ---- decode worker ---------------------------------------------------------------------------------
time_to_first_token_seconds = Histogram(
    PREFIX + "time_to_first_token_seconds",
    "Request arrival to the first generated token leaving the server",
    _PER_REQUEST,
    buckets=TTFT_BUCKETS,
)
request_queue_time_seconds = Histogram(
    PREFIX + "request_queue_time_seconds",
    "Admitted requests: time spent waiting for a scheduler slot",
    _MODEL,
    buckets=QUEUE_BUCKETS,
)
request_prompt_tokens = Histogram(
    PREFIX + "request_prompt_tokens",
    "Prompt length of admitted requests, in tokens",
    _MODEL,
    buckets=LENGTH_BUCKETS,
)
request_generation_tokens = Histogram(
    PREFIX + "request_generation_tokens",
    "Tokens generated per successful request",
    _MODEL,
    buckets=LENGTH_BUCKETS,
)
request_success_total = Counter(
    PREFIX + "request_success_total",
    "Successful requests by finish reason (stop: EOS, stop string or token; length: max_tokens or context)",
    ("model", "finished_reason"),
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
kv_wire_seconds = Histogram(
    PREFIX + "kv_wire_seconds",
    "Remote prefill: time the KV was on the wire (per layer, the longer of the sender's send and the "
    "receiver's receive; waits for compute excluded); transport: tcp (data connection) or grpc",
    ("model", "transport"),
    buckets=TRANSFER_BUCKETS,
)
kv_goodput_bytes_per_second = Histogram(
    PREFIX + "kv_goodput_bytes_per_second",
    "Remote prefill: KV wire bytes / kv_wire_seconds of one transfer (what the link delivered)",
    ("model", "transport"),
    buckets=GOODPUT_BUCKETS,
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
# Compute slowdown while streaming: seconds per token layerwise ÷ bulk (docs/monitoring.md).
prefill_compute_seconds = Histogram(
    PREFIX + "prefill_compute_seconds",
    "Prefill worker: forward pass over one prompt by transfer mode (layerwise streams while computing, "
    "bulk sends after) and transport (tcp data connection or grpc frames)",
    ("model", "mode", "transport"),
    buckets=LATENCY_BUCKETS,
)
prefill_compute_tokens_total = Counter(
    PREFIX + "prefill_compute_tokens_total",
    "Prefill worker: prompt tokens behind prefill_compute_seconds (same labels; for seconds per token)",
    ("model", "mode", "transport"),
)
kv_frames_sent_total = Counter(
    PREFIX + "kv_frames_sent_total", "Prefill worker: KV wire frames sent (header, layer, trailer)", _MODEL
)
kv_send_bytes_total = Counter(
    PREFIX + "kv_send_bytes_total", "Prefill worker: KV tensor bytes sent (wire size)", _MODEL
)
prefill_queue_seconds = Histogram(
    PREFIX + "prefill_queue_seconds",
    "Prefill worker: time a prefill waited behind others before its forward pass",
    _MODEL,
    buckets=QUEUE_BUCKETS,
)

# ---- both ------------------------------------------------------------------------------------------
build = Info(PREFIX + "build", "Versions this worker runs (value 1; the versions are labels)", _MODEL)


def zero_labelled_series(model: str) -> None:
    """Create every outcome and fallback-reason series of `model` at 0.

    A labelled counter appears only at its first increment, so `rate()` and `increase()` would miss
    that first event (and alerts on it would never see a change); started at 0 they see every one.
    """
    for outcome in RequestOutcome:
        requests_total.labels(model, outcome.value)
    for reason in FallbackReason:
        prefill_fallback_total.labels(model, reason.value)
    for finished in FINISH_REASONS:
        request_success_total.labels(model, finished)
    for remote in RemoteOutcome:
        remote_prefill_total.labels(model, remote.value)


def export_build_info(model: str, role: str) -> None:
    """`build_info{model, role, version, python, torch, transformers} 1`: what this worker runs."""
    import platform

    import torch
    import transformers

    try:
        version = importlib.metadata.version("hybrid-inference")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    build.labels(model).info(
        {
            "role": role,
            "version": version,
            "python": platform.python_version(),
            "torch": str(torch.__version__),
            "transformers": str(transformers.__version__),
        }
    )


def exposition() -> tuple[bytes, str]:
    """The text exposition of every metric in this process and its content type, for `GET /metrics`."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def sample_value(name: str, labels: dict[str, str] | None = None) -> float:
    """Current value of one sample (e.g. `hybrid_inference_requests_total`), 0.0 when it has none yet.

    For tests and benchmarks that compare a metric before and after some requests.
    """
    value = REGISTRY.get_sample_value(name, labels or {})
    return 0.0 if value is None else value
