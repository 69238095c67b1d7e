"""The decode worker's configuration: one frozen dataclass, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from hybrid_workers.enums import Fallback, WireEncoding
from hybrid_workers.errors import UserError

E = TypeVar("E", bound=StrEnum)

# Prompts shorter than this prefill locally: below it the round trip costs more than the prefill.
DEFAULT_REMOTE_PREFILL_MIN_TOKENS = 32


@dataclass(frozen=True)
class DecodeConfig:
    """Everything the decode worker needs besides the loaded model."""

    served_model_name: str  # the `model` clients must send (GET /v1/models lists it)
    prefill: str | None = None  # HOST:PORT of the prefill worker; None: every prompt prefills locally
    remote_prefill_min_tokens: int = DEFAULT_REMOTE_PREFILL_MIN_TOKENS  # shorter prompts stay local
    fallback: Fallback = Fallback.LOCAL  # policy when remote prefill fails
    prefill_timeout_s: float = 60.0  # deadline of one remote prefill, KV transfer included
    max_concurrency: int = 2  # requests running at once (each holds a model thread and its KV cache)
    max_queue: int = 64  # requests waiting for a slot; beyond it: 429 with Retry-After
    max_model_len: int | None = None  # prompt + completion token limit; None: the model's context
    kv_compression: WireEncoding = WireEncoding.NONE  # wire compression asked of the prefill worker
    tls: Any = None  # kv.tls.TLSConfig for the channel to the prefill worker; None: plaintext
    predicted_ttft_s: float | None = None  # the planner's TTFT for this placement (exported as a gauge)
    predicted_decode_tps: float | None = None  # the planner's decode tokens/s (exported as a gauge)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fallback", _choice("--fallback", Fallback, self.fallback))
        object.__setattr__(
            self, "kv_compression", _choice("--kv-compression", WireEncoding, self.kv_compression)
        )
        _positive("--remote-prefill-min-tokens", self.remote_prefill_min_tokens)
        _positive("--max-concurrency", self.max_concurrency)
        _positive("--prefill-timeout", self.prefill_timeout_s)
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


def parse_min_tokens(value: str | int) -> int:
    """--remote-prefill-min-tokens: a positive integer, or `auto` for the built-in default."""
    text = str(value).strip()
    if text == "auto":
        return DEFAULT_REMOTE_PREFILL_MIN_TOKENS
    try:
        return int(text)
    except ValueError:
        raise UserError(f"--remote-prefill-min-tokens {value!r}: use a positive integer or auto") from None


def _choice(flag: str, enum: type[E], value: object) -> E:
    try:
        return enum(str(value))
    except ValueError:
        valid = ", ".join(member.value for member in enum)
        raise UserError(f"{flag} {value!r}: use one of {valid}") from None


def _positive(flag: str, value: float) -> None:
    if value <= 0:
        raise UserError(f"{flag} {value}: must be greater than 0")


def _check_target(target: str) -> None:
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"--prefill {target!r}: expected HOST:PORT, e.g. 127.0.0.1:50051")
