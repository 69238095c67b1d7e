"""The one reconcile pass, used by create, update, resume, the drift timer and child events.

validate → check nodes and secrets → render → dry-run every change → apply → prune → compute status →
write status once (an Event when the phase or its reason changes). Idempotent: a second pass over an
unchanged world applies nothing and writes nothing.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from hybrid_operator.agent_auto import choose_decode
from hybrid_operator.agent_status import decode_role, with_agent
from hybrid_operator.agent_world import AgentProblem, read_lease
from hybrid_operator.apply import ChildRejected, apply_all
from hybrid_operator.config import OperatorConfig
from hybrid_operator.kube import ApplyResult, KubeClient, KubeError
from hybrid_operator.models import HybridInference, parse
from hybrid_operator.placement import HeldPlacement, NodeFacts, NodePlacement, hold_placement, with_prediction
from hybrid_operator.placement.agent import manual_for_checks
from hybrid_operator.reconcile_agent import agent_placement, apply_agent
from hybrid_operator.render import render
from hybrid_operator.render_agent import adapt
from hybrid_operator.render_common import DECODE, PREFILL, child_name
from hybrid_operator.render_network import service_monitor
from hybrid_operator.status import RoleState, invalid_status, ready_status
from hybrid_operator.validation import SpecProblem, check_spec

logger = logging.getLogger(__name__)
TLS_KEYS = ("tls.crt", "tls.key", "ca.crt")
STATUS_FIELDS = (
    "phase",
    "observedGeneration",
    "conditions",
    "placement",
    "prediction",
    "endpoints",
    "agent",
)
# InvalidSpec reasons that only a spec change can clear (not retried by the resync timer).
PERMANENT_REASONS = ("ChildRejected",)
__all__ = ["SpecProblem", "apply_all", "reconcile"]  # SpecProblem, apply_all: moved, still importable here


@dataclass(frozen=True)
class PassResult:
    """What one pass did: the status it wrote and the children it created or changed."""

    status: dict[str, Any]
    changes: tuple[str, ...] = ()


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


async def check_world(
    kube: KubeClient, cr: HybridInference, previous: Mapping[str, Any] | None = None
) -> HeldPlacement:
    """Where each role runs on the current nodes (the last good placement kept when its nodes are
    unavailable), and the TLS Secret; raises SpecProblem when either cannot work."""
    nodes = await kube.list_nodes()
    if nodes is None:
        held = HeldPlacement(
            NodePlacement(("?",), ("?",), reason="nodes not readable: placement not checked")
        )
    else:
        held = hold_placement(cr.spec, nodes, previous or {}, cr.metadata.generation)
        if held.placement.problems:
            raise SpecProblem("NoMatchingNode", "; ".join(held.placement.problems))
        facts = [NodeFacts.from_node(n) for n in nodes]
        held = dataclasses.replace(held, placement=with_prediction(cr.spec, facts, held.placement))
    tls = cr.spec.kv_transfer.tls
    # cert-manager writes the Secret after the Certificate exists: the pods wait for it, not the spec.
    if tls.enabled and tls.secret_name and tls.cert_manager is None:
        try:
            keys = await kube.get_secret_keys(cr.namespace, tls.secret_name)
        except KubeError as exc:
            if exc.status != 403:
                raise
            # Secret access is granted per namespace only (chart: secretNamespaces); without it the
            # pods report a missing Secret themselves (FailedMount events).
            logger.info("TLS Secret %s/%s not checked: no permission", cr.namespace, tls.secret_name)
            return held
        if keys is None:
            raise SpecProblem(
                "TLSSecretMissing", f"kvTransfer.tls.secretName {tls.secret_name!r}: no such Secret"
            )
        missing = [key for key in TLS_KEYS if key not in keys]
        if missing:
            raise SpecProblem("TLSSecretIncomplete", f"Secret {tls.secret_name!r} lacks {', '.join(missing)}")
    return held


async def prune(kube: KubeClient, cr: HybridInference) -> list[str]:
    """Delete children the spec no longer asks for (only ones this resource owns)."""
    if cr.spec.metrics.service_monitor or not cr.metadata.uid:
        return []
    monitor = service_monitor(cr)
    deleted = await kube.delete_owned(
        "monitoring.coreos.com/v1",
        "ServiceMonitor",
        cr.namespace,
        monitor["metadata"]["name"],
        cr.metadata.uid,
    )
    return [f"deleted ServiceMonitor {monitor['metadata']['name']}"] if deleted else []


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
) -> PassResult:
    """Write the status (only when it differs) and post events for changes and phase transitions."""
    meta, previous = body["metadata"], body.get("status") or {}
    # Every status field, None for those this pass has nothing for: a merge patch then removes stale
    # ones (an Invalid spec has no placement; manual placement has no prediction).
    complete = {key: status.get(key) for key in STATUS_FIELDS}
    if any(previous.get(key) != value for key, value in complete.items()):
        await kube.patch_status(meta.get("namespace") or "default", meta["name"], complete)
    if changes:
        await kube.post_event(body, "Applied", "; ".join(changes))
    said, before = _phase_says(status), _phase_says(previous)
    if said != before:
        warning = status["phase"] in ("Degraded", "Invalid")
        await kube.post_event(body, said[1] if warning else status["phase"], said[2], warning=warning)
    return PassResult(status, tuple(changes))


def _phase_says(status: Mapping[str, Any]) -> tuple[str, str, str]:
    """(phase, reason, message) of the condition behind the phase: a new one posts an Event."""
    phase = status.get("phase") or ""
    for cond in status.get("conditions") or []:
        if cond.get("type") == _phase_condition(phase):
            return phase, str(cond.get("reason")), str(cond.get("message"))
    return phase, "", ""


def _phase_condition(phase: str) -> str:
    return {"Invalid": "InvalidSpec", "Degraded": "Degraded"}.get(phase, "Ready")


def _rejected_at(previous: Mapping[str, Any], generation: int | None) -> bool:
    """Whether the status already reports a permanent rejection of this very generation."""
    conditions: list[dict[str, Any]] = previous.get("conditions") or []
    invalid = next((c for c in conditions if c.get("type") == "InvalidSpec"), {})
    return (
        invalid.get("status") == "True"
        and invalid.get("reason") in PERMANENT_REASONS
        and previous.get("observedGeneration") == generation
    )


async def reconcile(
    kube: KubeClient, body: Mapping[str, Any], config: OperatorConfig, retry_rejected: bool = True
) -> PassResult:
    """One pass over one HybridInference object body (as the API returned it).

    `retry_rejected=False` (resync timer, child events): a generation whose children the API server
    rejected is left alone until the spec changes, instead of being resent every period."""
    previous = body.get("status") or {}
    generation = body.get("metadata", {}).get("generation")
    if body.get("metadata", {}).get("deletionTimestamp"):
        # Being deleted (e.g. foreground deletion waiting for its children): never recreate them.
        return PassResult(dict(previous))
    try:
        cr = parse(dict(body))
    except ValidationError as exc:
        status = invalid_status(generation, "SchemaViolation", describe_errors(exc), previous, now_iso())
        return await _write(kube, body, status, ())
    if not retry_rejected and _rejected_at(previous, generation):
        return PassResult(dict(previous))
    try:
        check_spec(cr)
        auto = await choose_decode(kube, cr)  # auto placement may give decode to a live agent
        cr = auto.cr  # decode.agent set when it did
        lease = await read_lease(kube, cr)  # None unless decode.agent is set
        held = await check_world(kube, manual_for_checks(cr), previous)
        if lease is not None:  # decode is the agent: the planner weighs its profile
            held = await agent_placement(kube, cr, lease, held, auto.choice)
        held = auto.noted(held)  # Nodes won over agents: the reason says which were weighed
        manifests = render(cr, held.placement, config)
        if lease is not None:  # decode runs on a native agent (render_agent.py)
            manifests = adapt(manifests, cr, lease)
        results = await apply_all(kube, manifests)
        agent = await apply_agent(kube, cr, lease, held.placement, results, previous)
        results += agent.results
    except (SpecProblem, AgentProblem) as problem:
        status = invalid_status(generation, problem.reason, str(problem), previous, now_iso())
        return await _write(kube, body, status, ())
    except ChildRejected as rejected:
        message = f"the API server rejected {rejected}; fix the spec (nothing was created or changed)"
        status = invalid_status(generation, "ChildRejected", message, previous, now_iso())
        return await _write(kube, body, status, ())
    changes = [
        f"{r.action} {r.obj.get('kind')} {r.obj['metadata']['name']}"
        for r in results
        if r.action != "unchanged"
    ]
    changes += await prune(kube, cr)
    prefill, decode = _roles(cr, results)
    if agent.view is not None:
        decode = decode_role(cr, agent.view, decode)
    status = ready_status(cr, held.placement, (prefill, decode), previous, now_iso(), held.degraded)
    if agent.view is not None:
        status = with_agent(status, agent.view, agent.prefill, previous, now_iso())
    return await _write(kube, body, status, changes)
