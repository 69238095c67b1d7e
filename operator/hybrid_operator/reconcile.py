"""The one reconcile pass, used by create, update, resume, the drift timer and child events.

validate → check nodes and secrets → render → apply → compute status → write status once. Idempotent:
a second pass over an unchanged world applies nothing and writes nothing.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from hybrid_operator.config import OperatorConfig
from hybrid_operator.kube import ApplyResult, KubeClient, KubeError
from hybrid_operator.models import HybridInference, parse
from hybrid_operator.placement import NodeFacts, NodePlacement, resolve_placement
from hybrid_operator.render import render
from hybrid_operator.render_common import DECODE, PREFILL, child_name
from hybrid_operator.status import RoleState, invalid_status, ready_status

logger = logging.getLogger(__name__)
TLS_KEYS = ("tls.crt", "tls.key", "ca.crt")
STATUS_FIELDS = ("phase", "observedGeneration", "conditions", "placement", "prediction", "endpoints")


@dataclass(frozen=True)
class Outcome:
    """What one pass did: the status it wrote and the children it created or changed."""

    status: dict[str, Any]
    changes: tuple[str, ...] = ()


class SpecProblem(Exception):
    """The spec passed the schema but cannot work here; `reason` becomes the InvalidSpec reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def now_iso() -> str:
    """Current UTC time as Kubernetes writes timestamps."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def describe_errors(exc: ValidationError) -> str:
    """Pydantic errors as `spec.prefill.gpus: Input should be ≤ 8 (got 9)`, one per line."""
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "object"
        message = str(error["msg"]).removeprefix("Value error, ")
        value = error.get("input")
        got = "" if isinstance(value, dict | list) else f" (got {value!r:.80})"
        lines.append(f"{where}: {message}{got}")
    return "; ".join(lines)


async def check_world(kube: KubeClient, cr: HybridInference) -> NodePlacement:
    """NodePlacement on the current nodes, and the TLS Secret; raises SpecProblem when either cannot work."""
    nodes = await kube.list_nodes()
    if nodes is None:
        placement = NodePlacement(("?",), ("?",), reason="nodes not readable: placement not checked")
    else:
        placement = resolve_placement(cr.spec, [NodeFacts.from_node(n) for n in nodes])
        if placement.problems:
            raise SpecProblem("NoMatchingNode", "; ".join(placement.problems))
    tls = cr.spec.kv_transfer.tls
    if tls.enabled and tls.secret_name:
        keys = await kube.get_secret_keys(cr.namespace, tls.secret_name)
        if keys is None:
            raise SpecProblem(
                "TLSSecretMissing", f"kvTransfer.tls.secretName {tls.secret_name!r}: no such Secret"
            )
        missing = [key for key in TLS_KEYS if key not in keys]
        if missing:
            raise SpecProblem("TLSSecretIncomplete", f"Secret {tls.secret_name!r} lacks {', '.join(missing)}")
    return placement


async def apply_all(kube: KubeClient, manifests: Sequence[Mapping[str, Any]]) -> list[ApplyResult]:
    """Apply in order; a missing ServiceMonitor CRD skips that object instead of failing the pass."""
    results = []
    for manifest in manifests:
        try:
            results.append(await kube.apply(manifest))
        except KubeError as exc:
            if manifest["kind"] != "ServiceMonitor" or exc.status != 404:
                raise
            logger.warning("ServiceMonitor skipped: the monitoring.coreos.com CRDs are not installed")
    return results


def _roles(cr: HybridInference, results: Sequence[ApplyResult]) -> tuple[RoleState, RoleState]:
    by_name = {
        r.obj.get("metadata", {}).get("name"): r.obj for r in results if r.obj.get("kind") == "Deployment"
    }
    return (
        RoleState.observe(PREFILL, cr.spec.prefill.replicas, by_name.get(child_name(cr, PREFILL))),
        RoleState.observe(DECODE, cr.spec.decode.replicas, by_name.get(child_name(cr, DECODE))),
    )


async def _write(
    kube: KubeClient, body: Mapping[str, Any], status: dict[str, Any], changes: Sequence[str]
) -> Outcome:
    """Write the status (only when it differs) and post events for changes and phase transitions."""
    meta, previous = body["metadata"], body.get("status") or {}
    # Every status field, None for those this pass has nothing for: a merge patch then removes stale
    # ones (an Invalid spec has no placement; manual placement has no prediction).
    complete = {key: status.get(key) for key in STATUS_FIELDS}
    if any(previous.get(key) != value for key, value in complete.items()):
        await kube.patch_status(meta.get("namespace") or "default", meta["name"], complete)
    if changes:
        await kube.post_event(body, "Applied", "; ".join(changes))
    if previous.get("phase") != status["phase"]:
        warning = status["phase"] in ("Degraded", "Invalid")
        message = next(
            c["message"] for c in status["conditions"] if c["type"] == _phase_condition(status["phase"])
        )
        await kube.post_event(body, status["phase"], message, warning=warning)
    return Outcome(status, tuple(changes))


def _phase_condition(phase: str) -> str:
    return {"Invalid": "InvalidSpec", "Degraded": "Degraded"}.get(phase, "Ready")


async def reconcile(kube: KubeClient, body: Mapping[str, Any], config: OperatorConfig) -> Outcome:
    """One pass over one HybridInference object body (as the API returned it)."""
    previous = body.get("status") or {}
    generation = body.get("metadata", {}).get("generation")
    if body.get("metadata", {}).get("deletionTimestamp"):
        # Being deleted (e.g. foreground deletion waiting for its children): never recreate them.
        return Outcome(dict(previous))
    try:
        cr = parse(dict(body))
    except ValidationError as exc:
        status = invalid_status(generation, "SchemaViolation", describe_errors(exc), previous, now_iso())
        return await _write(kube, body, status, ())
    try:
        placement = await check_world(kube, cr)
    except SpecProblem as problem:
        status = invalid_status(generation, problem.reason, str(problem), previous, now_iso())
        return await _write(kube, body, status, ())
    results = await apply_all(kube, render(cr, placement, config))
    changes = [
        f"{r.action} {r.obj.get('kind')} {r.obj['metadata']['name']}"
        for r in results
        if r.action != "unchanged"
    ]
    status = ready_status(cr, placement, _roles(cr, results), previous, now_iso())
    return await _write(kube, body, status, changes)
