"""The operator's configuration: its own settings (HYBRID_INFERENCE_* env mirrors) and kopf's settings."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import kopf

DEFAULT_PREFILL_IMAGE = "hybrid-inference/prefill:0.1.0"
DEFAULT_DECODE_IMAGE = "hybrid-inference/decode:0.1.0"


def env_int(name: str, default: int, minimum: int) -> int:
    """An integer environment variable ≥ `minimum` (`default` when unset); ValueError names a bad one."""
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
            resync_seconds=env_int("HYBRID_INFERENCE_RESYNC_SECONDS", 60, minimum=1),
            metrics_port=env_int("HYBRID_INFERENCE_METRICS_PORT", 0, minimum=0),
        )


# kopf keeps its handler state in annotations under this prefix.
KOPF_PREFIX = "hybridinference.dev"


def label_selector(labels: Mapping[str, str]) -> str:
    """`{"a": "1", "b": "2"}` -> `a=1,b=2` (Kubernetes equality-based label selector)."""
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


def configure_kopf(settings: kopf.OperatorSettings, child_labels: Mapping[str, str] | None = None) -> None:
    """Apply our choices to kopf's settings, each with its reason (called from the startup handler)."""
    import kopf  # only the running operator needs it; rendering and the planner do not

    # kopf's `labels=` handler filters run in the operator, after the API server has streamed every
    # Deployment in scope (kopf/_cogs/clients/watching.py sends only settings.watching.label_selectors
    # as labelSelector). Ask the API server to send only our children.
    if child_labels:
        settings.watching.label_selectors["apps", "deployments"] = label_selector(child_labels)

    # kopf's peering is off: it pauses equal-priority peers instead of electing one, and needs its own
    # CRDs. A second replica is made safe by our Lease election (leader.py), which holds a standby in
    # the startup handler before kopf watches or writes anything.
    settings.peering.standalone = True
    # No namespace/CRD watching: the operator only needs its own resource and children. This keeps
    # RBAC least-privilege (no list on namespaces or CRDs); the CRD is installed before the operator.
    settings.scanning.disabled = True
    # Handler state and the last-handled spec live in annotations under our own prefix, not in
    # status (which we write as a whole once per pass) and not under kopf's default domain.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=KOPF_PREFIX)
    # Finalizers are not needed: children carry owner references, so Kubernetes' garbage collector
    # deletes them with the HybridInference. kopf adds one only for on.delete handlers, timers and
    # daemons, and we have none (drift repair is one operator-wide loop, see handlers.py); the name
    # below would only show up if someone added such a handler.
    settings.persistence.finalizer = f"{KOPF_PREFIX}/kopf-finalizer"
    # kopf posts an event per handler run; ours are more useful (what changed, phase changes), so
    # kopf only posts warnings and errors.
    settings.posting.level = logging.WARNING
    # Retry a failed pass (API unreachable, conflict) soon, then back off up to a minute.
    settings.networking.error_backoffs = [1, 2, 5, 10, 30, 60]
    # Keep watch streams short so a silently dropped connection is noticed within ten minutes.
    settings.watching.server_timeout = 600
    settings.watching.client_timeout = 660
