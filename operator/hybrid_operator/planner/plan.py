"""The plan: all placements, the best one, its speed-up, the remote-prefill threshold and a verdict."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from hybrid_operator.planner.errors import PlannerError
from hybrid_operator.planner.hardware import DeviceProfile
from hybrid_operator.planner.links import LinkProfile
from hybrid_operator.planner.model_shape import ModelShape
from hybrid_operator.planner.placements import Eligible, Placement, all_placements, best_of, evaluate
from hybrid_operator.planner.roofline import Request

# Longest prompt the threshold search considers (Llama 3.1's context length).
MAX_THRESHOLD_TOKENS = 131072


@dataclass(frozen=True)
class Plan:
    """What `hybrid-inference plan` prints and the operator writes into status."""

    model: ModelShape
    link: LinkProfile
    request: Request
    placements: list[Placement]  # every placement, in enumeration order
    best: Placement  # least total time among those that fit
    best_single: Placement | None  # best placement on one node (None if the model fits on none)
    remote_prefill_min_tokens: int | None  # for the best split; None = never pays / not a split

    @property
    def speedup_vs_best_single_node(self) -> float:
        """best_single.total / best.total (1.0 when the best is a single node)."""
        if self.best_single is None:
            return 1.0
        return self.best_single.total_seconds / self.best.total_seconds

    def verdict(self) -> str:
        """One sentence: what to do and why."""
        return verdict(self)

    def to_dict(self) -> dict[str, Any]:
        """The `plan --json` document."""
        best = self.best.to_dict() | {
            "speedup_vs_best_single_node": self.speedup_vs_best_single_node,
            "remote_prefill_min_tokens": self.remote_prefill_min_tokens,
        }
        return {
            "model": self.model.name,
            "link": self.link.id,
            "prompt_tokens": self.request.prompt_tokens,
            "output_tokens": self.request.output_tokens,
            "dtype": self.request.dtype,
            "kv_compression": self.request.kv_compression,
            "placements": [p.to_dict() for p in self.placements],
            "best": best,
            "verdict": self.verdict(),
        }


def remote_prefill_min_tokens(
    model: ModelShape,
    prefill_device: DeviceProfile,
    decode_device: DeviceProfile,
    link: LinkProfile,
    request: Request,
    mode: str = "layerwise",
    limit: int = MAX_THRESHOLD_TOKENS,
) -> int | None:
    """The shortest prompt for which remote prefill gives a lower TTFT than prefilling on the decode
    node itself; None when it never does up to `limit` tokens.

    Assumes one crossing: past it, the remote side's faster compute keeps its lead (prefill and
    transfer both grow at least linearly with the prompt, the slower device's compute fastest).
    """

    def pays(tokens: int) -> bool:
        shaped = replace(request, prompt_tokens=tokens, output_tokens=0)
        remote = evaluate(model, prefill_device, decode_device, link, shaped, mode).ttft_seconds
        local = evaluate(model, decode_device, decode_device, link, shaped, "single").ttft_seconds
        return remote < local

    if not pays(limit):
        return None
    low, high = 0, limit  # pays(high) is True; pays(low) is treated as False (empty prompt)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if pays(middle) else (middle, high)
    return high


def make_plan(
    model: ModelShape,
    devices: Sequence[DeviceProfile],
    link: LinkProfile,
    request: Request,
    split_modes: Sequence[str] = ("bulk", "layerwise"),
    eligible: Eligible | None = None,
) -> Plan:
    """Evaluate every placement of `request` on `devices` (splits in `split_modes`) and pick the best
    that fits (and is `eligible`, when given)."""
    if not devices:
        raise PlannerError("no devices to plan for")
    model.check_context(request.prompt_tokens + request.output_tokens)
    placements = all_placements(model, devices, link, request, split_modes)
    best = best_of(placements, eligible=eligible)
    if best is None and eligible is not None and best_of(placements) is not None:
        raise PlannerError("no placement fits where the roles may run (memory, taints or GPU requests)")
    if best is None:
        raise PlannerError(
            f"{model.name} fits on none of {', '.join(d.id for d in devices)}: {placements[0].note}"
        )
    threshold = None
    if best.mode != "single":
        by_id = {d.id: d for d in devices}
        limit = min(MAX_THRESHOLD_TOKENS, model.max_context or MAX_THRESHOLD_TOKENS)
        threshold = remote_prefill_min_tokens(
            model, by_id[best.prefill], by_id[best.decode], link, request, best.mode, limit
        )
    best_single = best_of(placements, single_only=True, eligible=eligible)
    return Plan(model, link, request, placements, best, best_single, threshold)


def _hiding(best: Placement) -> str:
    if best.kv_exposed_seconds <= best.kv_layer_send_seconds * 1.0001:
        return (
            f"the KV transfer ({best.kv_transfer_seconds:.2f} s) hides behind compute except the last "
            f"layer ({best.kv_exposed_seconds * 1000:.0f} ms)"
        )
    return (
        f"{best.kv_exposed_seconds:.2f} s of the {best.kv_transfer_seconds:.2f} s KV transfer stays exposed"
    )


def verdict(plan: Plan) -> str:
    """One sentence: the best placement, its total, its gain over the best single node, and why."""
    best, single = plan.best, plan.best_single
    if best.mode == "single":
        return (
            f"Run on {best.prefill} alone ({best.total_seconds:.2f} s total, TTFT {best.ttft_seconds:.2f} s, "
            f"{best.decode_tokens_per_second:.1f} tok/s): no split beats it for "
            f"{plan.request.prompt_tokens} prompt / {plan.request.output_tokens} output tokens."
        )
    versus = f", {plan.speedup_vs_best_single_node:.2f}x faster than {single.prefill} alone" if single else ""
    return (
        f"Prefill on {best.prefill}, decode on {best.decode} with {best.mode} KV streaming: "
        f"{best.total_seconds:.2f} s total (TTFT {best.ttft_seconds:.2f} s, "
        f"{best.decode_tokens_per_second:.1f} tok/s){versus}; {_hiding(best)}."
    )
