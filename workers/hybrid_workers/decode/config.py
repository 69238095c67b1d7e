"""The decode worker's configuration: one frozen dataclass, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hybrid_workers.enums import DataChecksum, Fallback, TransferMode, WireEncoding
from hybrid_workers.errors import UserError, closed_choice

# Prompts shorter than this prefill locally: below it the round trip costs more than the prefill.
DEFAULT_REMOTE_PREFILL_MIN_TOKENS = 32
# --max-concurrency auto (= the largest decode batch). On a CPU a step's cost grows with the batch
# once the matrix products turn compute-bound (about 8 rows for a 135M model on a few cores), so more
# rows mostly add inter-token latency; a GPU (or Apple GPU) stays weight-bandwidth-bound far beyond
# that, and 64 rows keep the per-sequence attention loop's overhead small.
DEFAULT_CONCURRENCY = {"cpu": 8, "cuda": 64, "mps": 32}
# Positions of a local prefill run between two decode steps (the inter-token latency bound).
DEFAULT_PREFILL_CHUNK_TOKENS = 256
# --kv-cache-bytes auto: this share of the memory free at start-up (after the weights are loaded).
KV_SHARE_OF_FREE = {"cpu": 0.5, "cuda": 0.9, "mps": 0.5}


@dataclass(frozen=True)
class DecodeConfig:
    """Everything the decode worker needs besides the loaded model."""

    served_model_name: str  # the `model` clients must send (GET /v1/models lists it)
    prefill: str | None = None  # HOST:PORT of the prefill worker; None: every prompt prefills locally
    remote_prefill_min_tokens: int = DEFAULT_REMOTE_PREFILL_MIN_TOKENS  # shorter prompts stay local
    fallback: Fallback = Fallback.LOCAL  # policy when remote prefill fails
    prefill_timeout_s: float = 60.0  # deadline of one remote prefill, KV transfer included
    prefill_stall_s: float = 5.0  # a remote prefill with no frame (not even a heartbeat) this long: stalled
    probe_interval_s: float = 2.0  # seconds between health + handshake probes of a ready prefill worker
    max_concurrency: int | None = None  # requests running at once = largest batch; None: per device
    kv_cache_bytes: int | None = None  # KV memory budget of all running sequences; None: from free memory
    prefill_chunk_tokens: int = DEFAULT_PREFILL_CHUNK_TOKENS  # local prefill chunk between decode steps
    max_queue: int = 64  # requests waiting for a slot; beyond it: 429 with Retry-After
    max_model_len: int | None = None  # prompt + completion token limit; None: the model's context
    kv_compression: WireEncoding = WireEncoding.NONE  # wire compression asked of the prefill worker
    kv_transfer_mode: TransferMode = TransferMode.LAYERWISE  # send mode asked of the prefill worker
    kv_data_checksum: DataChecksum = DataChecksum.AUTO  # crc32 per layer on the data connection
    prefill_data_port: int | None = None  # KV data connection port instead of the offered one (NAT/NodePort)
    tls: Any = None  # kv.tls.TLSConfig for the channel to the prefill worker; None: plaintext
    predicted_ttft_s: float | None = None  # the planner's TTFT for this placement (exported as a gauge)
    predicted_decode_tps: float | None = None  # the planner's decode tokens/s (exported as a gauge)
    read_timeout_s: float = 30.0  # a request's head, and then its body, must arrive within this

    def __post_init__(self) -> None:
        object.__setattr__(self, "fallback", closed_choice("--fallback", Fallback, self.fallback))
        object.__setattr__(
            self, "kv_compression", closed_choice("--kv-compression", WireEncoding, self.kv_compression)
        )
        object.__setattr__(
            self,
            "kv_transfer_mode",
            closed_choice("--kv-transfer-mode", TransferMode, self.kv_transfer_mode),
        )
        object.__setattr__(
            self, "kv_data_checksum", closed_choice("--kv-data-checksum", DataChecksum, self.kv_data_checksum)
        )
        _positive("--remote-prefill-min-tokens", self.remote_prefill_min_tokens)
        if self.max_concurrency is not None:
            _positive("--max-concurrency", self.max_concurrency)
        if self.kv_cache_bytes is not None:
            _positive("--kv-cache-bytes", self.kv_cache_bytes)
        _positive("--prefill-chunk-tokens", self.prefill_chunk_tokens)
        _positive("--prefill-timeout", self.prefill_timeout_s)
        _positive("--read-timeout", self.read_timeout_s)
        _positive("--prefill-stall-timeout", self.prefill_stall_s)
        _positive("--prefill-probe-interval", self.probe_interval_s)
        if self.prefill_data_port is not None and not 0 < self.prefill_data_port < 65536:
            raise UserError(f"--prefill-data-port {self.prefill_data_port}: not a TCP port; use 1-65535")
        if self.max_queue < 0:
            raise UserError(f"--max-queue {self.max_queue}: must be 0 or more")
        if self.max_model_len is not None:
            _positive("--max-model-len", self.max_model_len)
        if not self.served_model_name:
            raise UserError("--served-model-name: must not be empty")
        if self.prefill is not None:
            _check_target(self.prefill)

    def context_limit(self, model_context: int) -> int:
        """Prompt + completion tokens allowed: --max-model-len, capped by the model's own context."""
        if self.max_model_len is None:
            return model_context
        return min(self.max_model_len, model_context)

    def concurrency(self, device_type: str) -> int:
        """--max-concurrency, or its default for the device type (cpu | cuda | mps)."""
        if self.max_concurrency is not None:
            return self.max_concurrency
        return DEFAULT_CONCURRENCY.get(device_type, DEFAULT_CONCURRENCY["cpu"])


def parse_auto_int(value: str | int | None, flag: str) -> int | None:
    """A positive-integer flag that also takes `auto` (None: decided at start-up)."""
    text = str(value).strip() if value is not None else "auto"
    if text == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise UserError(f"{flag} {value!r}: use a positive integer or auto") from None


def parse_min_tokens(value: str | int) -> int:
    """--remote-prefill-min-tokens: a positive integer, or `auto` for the built-in default."""
    parsed = parse_auto_int(value, "--remote-prefill-min-tokens")
    return DEFAULT_REMOTE_PREFILL_MIN_TOKENS if parsed is None else parsed


def _positive(flag: str, value: float) -> None:
    if value <= 0:
        raise UserError(f"{flag} {value}: must be greater than 0")


def _check_target(target: str) -> None:
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"--prefill {target!r}: expected HOST:PORT, e.g. 127.0.0.1:50051")
