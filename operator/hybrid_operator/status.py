"""The HybridInference status: phase and conditions from what one reconcile pass observed (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hybrid_operator.models import HybridInference
from hybrid_operator.placement import NodePlacement, node_label
from hybrid_operator.render_common import child_name

CONDITION_TYPES = ("Ready", "PrefillReady", "DecodeReady", "Degraded", "InvalidSpec")


@dataclass(frozen=True)
class RoleState:
    """One role's Deployment as observed: how many replicas are wanted and available, and why not."""

    role: str
    desired: int
    available: int = 0
    failure: str | None = None  # message of a ReplicaFailure/ProgressDeadlineExceeded condition

    @classmethod
    def observe(cls, role: str, desired: int, deployment: Mapping[str, Any] | None) -> RoleState:
        """State from a Deployment body (None: it does not exist yet)."""
        if deployment is None:
            return cls(role, desired)
        status = deployment.get("status", {})
        stale = status.get("observedGeneration", 0) < deployment.get("metadata", {}).get("generation", 0)
        available = 0 if stale else int(status.get("availableReplicas", 0))
        return cls(role, desired, available, _failure(status.get("conditions", [])))

    @property
    def ready(self) -> bool:
        """All wanted replicas available (and at least one wanted)."""
        return self.desired > 0 and self.available >= self.desired

    def condition(self) -> tuple[bool, str, str]:
        """(status, reason, message) of this role's <Role>Ready condition."""
        if self.ready:
            return True, "Available", f"{self.available}/{self.desired} {self.role} pods available"
        if self.desired == 0:
            return False, "ScaledToZero", f"{self.role}.replicas is 0"
        if self.failure:
            return False, "DeploymentFailed", self.failure
        return False, "Progressing", f"{self.available}/{self.desired} {self.role} pods available"


def _failure(conditions: Sequence[Mapping[str, Any]]) -> str | None:
    for cond in conditions:
        failed_progress = (
            cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded"
        )
        if failed_progress or (cond.get("type") == "ReplicaFailure" and cond.get("status") == "True"):
            return str(cond.get("message") or cond.get("reason"))
    return None


def _conditions(
    wanted: Mapping[str, tuple[bool, str, str]], previous: Mapping[str, Any], generation: int | None, now: str
) -> list[dict[str, Any]]:
    """Conditions in CONDITION_TYPES order; lastTransitionTime kept while a condition's status holds."""
    before = {c.get("type"): c for c in previous.get("conditions", [])}
    result = []
    for ctype in CONDITION_TYPES:
        status, reason, message = wanted[ctype]
        text = "True" if status else "False"
        old = before.get(ctype, {})
        since = old.get("lastTransitionTime") if old.get("status") == text else None
        cond: dict[str, Any] = {"type": ctype, "status": text, "reason": reason, "message": message}
        cond["lastTransitionTime"] = since or now
        if generation is not None:
            cond["observedGeneration"] = generation
        result.append(cond)
    return result


def invalid_status(
    generation: int | None, reason: str, message: str, previous: Mapping[str, Any], now: str
) -> dict[str, Any]:
    """Status of a spec that cannot work: phase Invalid, InvalidSpec True with the reason."""
    unknown = (False, reason, "not reconciled: the spec is invalid")
    wanted = {
        "Ready": unknown,
        "PrefillReady": unknown,
        "DecodeReady": unknown,
        "Degraded": (False, "InvalidSpec", "see InvalidSpec"),
        "InvalidSpec": (True, reason, message),
    }
    status: dict[str, Any] = {
        "phase": "Invalid",
        "conditions": _conditions(wanted, previous, generation, now),
    }
    if generation is not None:
        status["observedGeneration"] = generation
    return status


def _phase(
    prefill: RoleState, decode: RoleState, previous: Mapping[str, Any], held: str | None = None
) -> tuple[str, bool, str]:
    """(phase, degraded, degraded message); `held`: why the placement is kept despite its nodes."""
    failures = [f"{s.role}: {s.failure}" for s in (prefill, decode) if s.failure]
    if held is not None:
        return "Degraded", True, "; ".join([held, *failures])
    if prefill.ready and decode.ready:
        return "Ready", False, "both roles available"
    if failures:
        return "Degraded", True, "; ".join(failures)
    if previous.get("phase") in ("Ready", "Degraded"):
        lost = [s.role for s in (prefill, decode) if not s.ready]
        return "Degraded", True, f"lost availability: {', '.join(lost)}"
    return "Pending", False, "waiting for both roles to become available"


def ready_status(
    cr: HybridInference,
    placement: NodePlacement,
    roles: tuple[RoleState, RoleState],
    previous: Mapping[str, Any],
    now: str,
    held: str | None = None,
) -> dict[str, Any]:
    """Status of a valid spec whose children were applied: phase, conditions, placement, endpoints.

    `held`: the placement's nodes are unavailable and it is kept anyway (Degraded, NodeUnavailable)."""
    prefill, decode = roles
    phase, degraded, degraded_message = _phase(prefill, decode, previous, held)
    both = prefill.ready and decode.ready
    degraded_reason = "NodeUnavailable" if held else "Degraded" if degraded else "AsExpected"
    wanted = {
        "Ready": (both, "Available" if both else "NotAvailable", degraded_message),
        "PrefillReady": prefill.condition(),
        "DecodeReady": decode.condition(),
        "Degraded": (degraded, degraded_reason, degraded_message),
        "InvalidSpec": (False, "Valid", "spec accepted"),
    }
    generation = cr.metadata.generation
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": _conditions(wanted, previous, generation, now),
        "placement": {
            "prefillNode": node_label(placement.prefill_nodes),
            "decodeNode": node_label(placement.decode_nodes),
            "reason": placement.summary,
        },
        "endpoints": {"api": f"http://{child_name(cr, 'api')}.{cr.namespace}.svc:{cr.spec.serving.port}"},
    }
    prediction = _prediction(placement)
    if prediction:
        status["prediction"] = prediction
    if generation is not None:
        status["observedGeneration"] = generation
    return status


def _prediction(placement: NodePlacement) -> dict[str, float]:
    predicted = placement.prediction
    if predicted is None:
        return {}
    values = {
        "ttftSeconds": predicted.ttft_seconds,
        "decodeTokensPerSecond": predicted.decode_tokens_per_second,
        "speedupVsBestSingleNode": predicted.speedup_vs_best_single_node,
        "remotePrefillMinTokens": predicted.remote_prefill_min_tokens,
    }
    return {key: round(value, 4) for key, value in values.items() if value is not None}
