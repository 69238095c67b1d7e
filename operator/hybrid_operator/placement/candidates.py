"""`placement.mode: auto` without `decode.agent`: the decode role goes to the best of the labelled Nodes
and the live decode agents of the namespace (pure; the Leases are read in agent_auto.py).

An agent is a candidate when its Lease is live, the spec's KV link has mTLS (the agent's link leaves
the cluster network), its profile is known, and no other resource's worker holds the spec's port on it.
Live means renewed within its duration by the operator's own clock (agent_world.py); until this
operator has seen a renewal, the renewTime itself is judged with CLOCK_SKEW_S of slack, so a Lease
abandoned hours ago is ignored at once and a live agent with a skewed clock joins at its next renewal.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass, field

from hybrid_operator.agent_contract import AgentLease
from hybrid_operator.models import HybridInference
from hybrid_operator.placement.agent import agent_node
from hybrid_operator.placement.auto import HOSTNAME_LABEL, plan_for_spec
from hybrid_operator.placement.nodes import AGENT_NODE_PREFIX, NodeFacts, NodePlacement, Prediction, fits
from hybrid_operator.planner import PlannerError
from hybrid_operator.planner.auto_placement import NoPlacementError
from hybrid_operator.planner.nodes import NodeLike, ProfiledNode, profile_node

CLOCK_SKEW_S = 120.0  # first sight: how far the agent's clock may be behind ours


@dataclass(frozen=True)
class AgentSighting:
    """One agent's Lease as this operator saw it in one pass."""

    lease: AgentLease
    silent_s: float  # seconds its renewTime has not changed, by the operator's clock
    renewing: bool  # this operator has seen its renewTime change (else: judged by its value)


@dataclass(frozen=True)
class AutoChoice:
    """The outcome: `agent` chosen (with its `placement`), or Nodes win (`placement` None: the node
    path places them) and `note` says which agents were weighed or left out and why."""

    agent: AgentLease | None = None
    placement: NodePlacement | None = None
    note: str = ""
    excluded: dict[str, str] = field(default_factory=dict)  # "agent:<name>" -> why not a candidate


def not_live(sighting: AgentSighting, now: datetime.datetime) -> str:
    """Why the agent is not live ("" when it is)."""
    lease, silent = sighting.lease, sighting.silent_s
    duration = max(lease.duration_s, 1)
    if lease.state == "stopped":
        return "shut down"
    if lease.renewed is None:
        return "Lease never renewed (is the agent running?)"
    if silent > duration:
        return f"Lease not renewed for {silent:.0f} s (lease {duration} s)"
    age = (now - lease.renewed).total_seconds()
    if not sighting.renewing and age > duration + CLOCK_SKEW_S:
        return f"Lease last renewed {age:.0f} s ago (lease {duration} s)"
    return ""


def _why_not(cr: HybridInference, sighting: AgentSighting, now: datetime.datetime) -> str:
    owner, port = f"{cr.namespace}/{cr.name}", cr.spec.serving.port
    tls = cr.spec.kv_transfer.tls
    if not (tls.enabled and tls.mutual):
        return "kvTransfer.tls.enabled and .mutual are off (an agent's KV link needs mTLS)"
    if why := not_live(sighting, now):
        return why
    taken = [o for o, r in sorted(sighting.lease.workers.items()) if o != owner and r.port == port]
    return f"port {port} is taken there by {taken[0]}" if taken else ""


def _candidates(nodes: Sequence[NodeLike], agents: Sequence[ProfiledNode], excluded: dict[str, str]) -> str:
    """`spark: label …; agent:mac: agent device profile …` for a message naming every candidate."""
    parts = [f"{p.node}: {p.reason}" for p in (profile_node(n) for n in nodes)]
    parts += [f"{a.name}: {a.evidence}" for a in agents]
    parts += [f"{name}: {why}" for name, why in sorted(excluded.items())]
    return "; ".join(parts)


def choose(
    cr: HybridInference,
    nodes: Sequence[NodeFacts],
    sightings: Sequence[AgentSighting],
    now: datetime.datetime,
) -> AutoChoice:
    """Plan over the Nodes and the live agents; NodePlacement with `problems` naming every candidate
    when nothing fits. No Leases at all: AutoChoice() (the node path alone, as without agents)."""
    if not sightings:
        return AutoChoice()
    spec, owner = cr.spec, f"{cr.namespace}/{cr.name}"
    excluded: dict[str, str] = {}
    agents: dict[str, tuple[AgentLease, ProfiledNode]] = {}
    for sighting in sightings:
        name = AGENT_NODE_PREFIX + sighting.lease.name
        node = agent_node(sighting.lease, owner)
        why = _why_not(cr, sighting, now) or ("" if node.device is not None else node.evidence)
        if why:
            excluded[name] = why
        else:
            agents[name] = (sighting.lease, node)
    agent_nodes = [node for _, node in agents.values()]
    roles = {
        n.name: {role for role, pool in (("prefill", spec.prefill), ("decode", spec.decode)) if fits(pool, n)}
        for n in nodes
    }
    roles |= {name: {"decode"} for name in agents}
    left_out = "; ".join(f"{name}: {why}" for name, why in sorted(excluded.items()))
    try:
        plan = plan_for_spec(spec, [*nodes, *agent_nodes], roles)
    except (NoPlacementError, PlannerError) as exc:
        problem = (
            f"placement.mode auto: no Node or agent can serve: {exc}; candidates: "
            f"{_candidates(nodes, agent_nodes, excluded)}"
        )
        return AutoChoice(
            placement=NodePlacement((), (), reason=problem, problems=(problem,)), excluded=excluded
        )
    if plan.decode_node not in agents:
        weighed = f"agents weighed: {', '.join(sorted(agents))}" if agents else ""
        note = "; ".join(t for t in (weighed, f"agents left out: {left_out}" if left_out else "") if t)
        return AutoChoice(note=note, excluded=excluded)
    hostname = {n.name: n.labels.get(HOSTNAME_LABEL, n.name) for n in nodes}
    out = sorted({**plan.excluded, **excluded}.items())
    others = "; excluded: " + "; ".join(f"{name}: {why}" for name, why in out) if out else ""
    placement = NodePlacement(
        prefill_nodes=(plan.prefill_node,),
        decode_nodes=(plan.decode_node,),
        reason=f"auto: {plan.reason}{others}",
        prediction=Prediction.of(plan),
        prefill_selector={HOSTNAME_LABEL: hostname[plan.prefill_node]},
    )
    return AutoChoice(agent=agents[plan.decode_node][0], placement=placement, excluded=excluded)
