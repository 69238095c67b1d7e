"""`placement.mode: auto`: the operator's side of the planner (spec + node facts -> NodePlacement).

Reads which roles may run on each node (taints, GPU requests), asks `plan_placement` for the fastest
prefill/decode pair, pins each role to its node by hostname, and carries the prediction and the
remote-prefill threshold to the status and the decode worker's flags.
"""

from __future__ import annotations

from collections.abc import Sequence

from hybrid_operator.models import HybridInference, HybridInferenceSpec
from hybrid_operator.placement.nodes import NodeFacts, NodePlacement, Prediction, fits
from hybrid_operator.planner import PlannerError, Request, link_profile, model_shape
from hybrid_operator.planner.auto_placement import NoPlacementError, PlacementPlan, plan_placement
from hybrid_operator.planner.nodes import NodeLike

# What auto placement optimises for unless spec.placement says otherwise: a long prompt (where
# disaggregation matters) and a medium answer, over 10 GbE.
DEFAULT_PROMPT_TOKENS = 4096
DEFAULT_OUTPUT_TOKENS = 256
DEFAULT_LINK = "10gbe"
DEFAULT_SHAPE = "smollm2-135m-instruct"  # the workers' default model (no model.source)
HOSTNAME_LABEL = "kubernetes.io/hostname"


def planner_request(spec: HybridInferenceSpec, max_context: int | None = None) -> Request:
    """The request shape to plan for: spec.placement's lengths (defaults fitted into the model's
    context `max_context`), the model dtype, the KV compression."""
    dtype = spec.model.dtype.value
    if dtype == "auto":
        dtype = "float32" if spec.model.source is None else "bfloat16"
    output = spec.placement.output_tokens or DEFAULT_OUTPUT_TOKENS
    if max_context is not None and not spec.placement.output_tokens:
        output = min(output, max_context // 4)
    default_prompt = (
        DEFAULT_PROMPT_TOKENS if max_context is None else min(DEFAULT_PROMPT_TOKENS, max_context - output)
    )
    prompt = spec.placement.prompt_tokens or default_prompt
    return Request(prompt, output, dtype, spec.kv_transfer.compression.value)


def _roles(spec: HybridInferenceSpec, nodes: Sequence[NodeFacts]) -> dict[str, set[str]]:
    return {
        node.name: {
            role for role, pool in (("prefill", spec.prefill), ("decode", spec.decode)) if fits(pool, node)
        }
        for node in nodes
    }


def _excluded_text(plan: PlacementPlan) -> str:
    if not plan.excluded:
        return ""
    return "; excluded: " + "; ".join(f"{node}: {why}" for node, why in sorted(plan.excluded.items()))


def _placement(plan: PlacementPlan, nodes: Sequence[NodeFacts]) -> NodePlacement:
    hostname = {n.name: n.labels.get(HOSTNAME_LABEL, n.name) for n in nodes}
    return NodePlacement(
        prefill_nodes=(plan.prefill_node,),
        decode_nodes=(plan.decode_node,),
        reason="auto: " + plan.reason + _excluded_text(plan),
        prediction=Prediction.of(plan),
        prefill_selector={HOSTNAME_LABEL: hostname[plan.prefill_node]},
        decode_selector={HOSTNAME_LABEL: hostname[plan.decode_node]},
    )


def plan_for_spec(
    spec: HybridInferenceSpec, candidates: Sequence[NodeLike], roles: dict[str, set[str]]
) -> PlacementPlan:
    """The planner's fastest pair among `candidates` for `spec` (its model shape, request lengths, link
    and transfer mode); raises NoPlacementError or PlannerError when it cannot plan."""
    shape = model_shape(spec.model.source or DEFAULT_SHAPE)
    return plan_placement(
        candidates,
        shape,
        planner_request(spec, shape.max_context),
        link_profile(spec.placement.link or DEFAULT_LINK),
        spec.kv_transfer.mode.value,
        roles=roles,
    )


def resolve_auto(spec: HybridInferenceSpec, nodes: Sequence[NodeFacts]) -> NodePlacement:
    """The nodes the planner chose; a NodePlacement with `problems` when it cannot choose."""
    try:
        plan = plan_for_spec(spec, nodes, _roles(spec, nodes))
    except NoPlacementError as exc:
        problem = f"placement.mode auto: {exc}"
        return NodePlacement((), (), reason=problem, problems=(problem,))
    except PlannerError as exc:
        problem = f"placement.mode auto: cannot plan: {exc}; use placement.mode manual"
        return NodePlacement((), (), reason=problem, problems=(problem,))
    return _placement(plan, nodes)


def decode_prediction_flags(cr: HybridInference, placement: NodePlacement) -> dict[str, object]:
    """Decode flags from the plan: predicted TTFT/TPS (exported as gauges) and, when the spec says
    `remotePrefillMinTokens: auto`, the planner's threshold. Empty for manual placement."""
    predicted = placement.prediction
    if predicted is None:
        return {}
    flags: dict[str, object] = {
        "--predicted-ttft-seconds": predicted.ttft_seconds,
        "--predicted-decode-tokens-per-second": predicted.decode_tokens_per_second,
    }
    threshold = predicted.remote_prefill_min_tokens
    if cr.spec.serving.remote_prefill_min_tokens == "auto" and threshold is not None:
        flags["--remote-prefill-min-tokens"] = threshold
    return flags
