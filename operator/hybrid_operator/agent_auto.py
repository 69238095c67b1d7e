"""Auto placement across Nodes and decode agents: the API side (the choice is placement/candidates.py).

With `placement.mode: auto` and no `decode.agent`, every agent Lease of the namespace (labelled
hybridinference.dev/agent, as the chart creates them) is weighed with the Nodes. When an agent wins,
the resource is reconciled as if its spec named that agent (its announced TLS folder, no fallback:
a lost agent is simply no longer a candidate, and the next pass places decode elsewhere).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from dataclasses import dataclass

from hybrid_operator.agent_contract import AGENT_LABEL, AgentLease
from hybrid_operator.agent_world import CLOCK
from hybrid_operator.kube import KubeClient, KubeError
from hybrid_operator.models import AgentTarget, HybridInference, PlacementMode
from hybrid_operator.placement import HeldPlacement, NodeFacts
from hybrid_operator.placement.candidates import AgentSighting, AutoChoice, choose
from hybrid_operator.validation import SpecProblem

logger = logging.getLogger(__name__)
LEASE_API = "coordination.k8s.io/v1"


@dataclass(frozen=True)
class AutoResult:
    """The resource to reconcile (decode.agent set when an agent was chosen) and the choice."""

    cr: HybridInference
    choice: AutoChoice

    def noted(self, held: HeldPlacement) -> HeldPlacement:
        """`held` with the choice's note (which agents were weighed or left out) in its reason."""
        if self.choice.agent is not None or not self.choice.note:
            return held
        reason = f"{held.placement.reason}; {self.choice.note}"
        return dataclasses.replace(held, placement=dataclasses.replace(held.placement, reason=reason))


async def sightings(kube: KubeClient, namespace: str) -> list[AgentSighting]:
    """The agent Leases of `namespace` as seen now (none when the operator may not list Leases)."""
    try:
        leases = await kube.list_all(LEASE_API, "Lease", namespace)
    except KubeError as exc:
        if exc.status != 403:
            raise
        logger.warning("not allowed to list Leases in %s: agents not weighed (%s)", namespace, exc)
        return []
    seen = []
    for body in leases:
        if AGENT_LABEL not in (body.get("metadata", {}).get("labels") or {}):
            continue  # another Lease (leader election, a node's): not an agent
        lease = AgentLease.from_object(body)
        silent = CLOCK.silent_for(namespace, lease.name, str(body.get("spec", {}).get("renewTime") or ""))
        seen.append(AgentSighting(lease, silent, CLOCK.renewing(namespace, lease.name)))
    return seen


def as_named(cr: HybridInference, lease: AgentLease) -> HybridInference:
    """`cr` with decode.agent naming the chosen agent, as a user would have written it."""
    target = AgentTarget(name=lease.name)
    if lease.tls_dir:
        target = target.model_copy(update={"tls_dir": lease.tls_dir})
    decode = cr.spec.decode.model_copy(update={"agent": target})
    return cr.model_copy(update={"spec": cr.spec.model_copy(update={"decode": decode})})


async def choose_decode(kube: KubeClient, cr: HybridInference) -> AutoResult:
    """Weigh the namespace's agents with the Nodes (auto placement without decode.agent only);
    SpecProblem naming every candidate when none can serve."""
    if cr.spec.placement.mode != PlacementMode.AUTO or cr.spec.decode.agent is not None:
        return AutoResult(cr, AutoChoice())
    seen = await sightings(kube, cr.namespace)
    if not seen:
        return AutoResult(cr, AutoChoice())
    nodes = await kube.list_nodes()
    if nodes is None:
        return AutoResult(cr, AutoChoice())  # nodes not readable: the node path reports it
    now = datetime.datetime.now(datetime.UTC)
    choice = choose(cr, [NodeFacts.from_node(n) for n in nodes], seen, now)
    if choice.placement is not None and choice.placement.problems:
        raise SpecProblem("NoMatchingNode", "; ".join(choice.placement.problems))
    return AutoResult(as_named(cr, choice.agent) if choice.agent is not None else cr, choice)
