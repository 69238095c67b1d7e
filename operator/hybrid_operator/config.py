"""The operator's own settings, read once from HYBRID_INFERENCE_* environment variables (flag mirrors)."""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_PREFILL_IMAGE = "hybrid-inference/prefill:0.1.0"
DEFAULT_DECODE_IMAGE = "hybrid-inference/decode:0.1.0"


def _env_int(name: str, default: int, minimum: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r}: not an integer") from None
    if value < minimum:
        raise ValueError(f"{name}={value}: must be ≥ {minimum}")
    return value


@dataclass(frozen=True)
class OperatorConfig:
    """Settings the chart passes to the operator Deployment as environment variables."""

    prefill_image: str = DEFAULT_PREFILL_IMAGE  # HYBRID_INFERENCE_PREFILL_IMAGE: default prefill image
    decode_image: str = DEFAULT_DECODE_IMAGE  # HYBRID_INFERENCE_DECODE_IMAGE: default decode image
    resync_seconds: int = 60  # HYBRID_INFERENCE_RESYNC_SECONDS: timer period that repairs drift
    metrics_port: int = 0  # HYBRID_INFERENCE_METRICS_PORT: operator /metrics port; 0 = off
    field_manager: str = "hybrid-inference-operator"  # server-side apply field manager

    @classmethod
    def from_env(cls) -> OperatorConfig:
        """Read the environment; raises ValueError naming the variable and value when one is bad."""
        return cls(
            prefill_image=os.environ.get("HYBRID_INFERENCE_PREFILL_IMAGE") or DEFAULT_PREFILL_IMAGE,
            decode_image=os.environ.get("HYBRID_INFERENCE_DECODE_IMAGE") or DEFAULT_DECODE_IMAGE,
            resync_seconds=_env_int("HYBRID_INFERENCE_RESYNC_SECONDS", 60, minimum=1),
            metrics_port=_env_int("HYBRID_INFERENCE_METRICS_PORT", 0, minimum=0),
        )
