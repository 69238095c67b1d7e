"""Automatic placement from nodes: the GPU prefills, the Mac decodes; unknown nodes are excluded."""

from __future__ import annotations

import pytest
from hybrid_operator.planner import Request, link_profile, model_shape
from hybrid_operator.planner.auto_placement import NoPlacementError, plan_placement
from hybrid_operator.planner.nodes import NodeInfo
from hypothesis import given, settings
from hypothesis import strategies as st

SPARK = NodeInfo(
    "spark", labels={"nvidia.com/gpu.product": "NVIDIA-GB10", "kubernetes.io/arch": "arm64"}, gpus=1
)
MAC = NodeInfo("mac-studio", labels={"kubernetes.io/arch": "arm64", "hybridinference.dev/device": "m3-ultra"})
PI = NodeInfo("raspberry", labels={"kubernetes.io/arch": "arm64"})
LLAMA, EXO_REQUEST, TEN_GBE = model_shape("llama-3.1-8b"), Request(8192, 32), link_profile("10gbe")


def test_gpu_node_prefills_and_mac_node_decodes_with_the_prediction() -> None:
    chosen = plan_placement([MAC, PI, SPARK], LLAMA, EXO_REQUEST, TEN_GBE)
    assert (chosen.prefill_node, chosen.decode_node, chosen.mode) == ("spark", "mac-studio", "layerwise")
    assert chosen.ttft_seconds == pytest.approx(1.47, rel=0.1)
    assert chosen.speedup_vs_best_single_node > 1.5
    assert chosen.remote_prefill_min_tokens is not None and chosen.remote_prefill_min_tokens < 8192
    assert set(chosen.excluded) == {"raspberry"}
    assert "prefill on spark (dgx-spark, from nvidia.com/gpu.product=NVIDIA-GB10)" in chosen.reason
    assert set(chosen.prediction()) == {"ttftSeconds", "decodeTokensPerSecond", "speedupVsBestSingleNode"}


def test_bulk_mode_in_the_spec_is_respected() -> None:
    chosen = plan_placement([SPARK, MAC], LLAMA, EXO_REQUEST, TEN_GBE, transfer_mode="bulk")
    assert chosen.mode == "bulk"
    assert {p.mode for p in chosen.plan.placements} == {"single", "bulk"}


def test_short_prompts_keep_everything_on_the_mac() -> None:
    chosen = plan_placement([SPARK, MAC], LLAMA, Request(16, 256), TEN_GBE)
    assert (chosen.prefill_node, chosen.decode_node, chosen.mode) == ("mac-studio", "mac-studio", "single")
    assert chosen.remote_prefill_min_tokens is None
    assert "alone is fastest" in chosen.reason


def test_identical_nodes_are_planned_once_and_the_first_by_name_is_chosen() -> None:
    twins = [NodeInfo(f"mac-{i}", labels={"hybridinference.dev/device": "m3-ultra"}) for i in (2, 1)]
    chosen = plan_placement([*twins, SPARK], LLAMA, EXO_REQUEST, TEN_GBE)
    assert chosen.decode_node == "mac-1"
    assert len(chosen.plan.placements) == 4  # 2 singles + 2 ordered splits (layerwise)


def test_only_unknown_nodes_raise_with_every_reason() -> None:
    gpu = NodeInfo("mystery-gpu", gpus=1)
    with pytest.raises(NoPlacementError, match="no node with a known device profile") as caught:
        plan_placement([PI, gpu], LLAMA, EXO_REQUEST, TEN_GBE)
    assert set(caught.value.excluded) == {"raspberry", "mystery-gpu"}
    assert "raspberry: arm64 node without a GPU" in str(caught.value)


def test_a_model_that_fits_no_known_node_is_explained() -> None:
    small = NodeInfo("l4-node", labels={"nvidia.com/gpu.product": "NVIDIA-L4"}, gpus=1)
    with pytest.raises(NoPlacementError, match=r"llama-3\.1-70b fits on none of l4"):
        plan_placement([small], model_shape("llama-3.1-70b"), EXO_REQUEST, TEN_GBE)


def test_roles_restrict_which_node_may_prefill_or_decode() -> None:
    # The Mac may only decode (its taint is tolerated by decode pods only); the Spark may do both.
    roles = {"spark": {"prefill", "decode"}, "mac-studio": {"decode"}}
    short = plan_placement([SPARK, MAC], LLAMA, Request(16, 256), TEN_GBE, roles=roles)
    assert (short.prefill_node, short.decode_node) == ("spark", "mac-studio")  # Mac alone is not allowed
    only_prefill = {"spark": {"prefill"}, "mac-studio": {"decode"}}
    chosen = plan_placement([SPARK, MAC], LLAMA, EXO_REQUEST, TEN_GBE, roles=only_prefill)
    assert chosen.speedup_vs_best_single_node == 1.0  # no single node may run both roles
    assert (chosen.prefill_node, chosen.decode_node) == ("spark", "mac-studio")


def test_a_known_node_that_no_role_may_use_is_excluded_with_the_reason() -> None:
    chosen = plan_placement([SPARK, MAC], LLAMA, EXO_REQUEST, TEN_GBE, roles={"spark": {"prefill", "decode"}})
    assert chosen.excluded == {"mac-studio": "neither role's pods can run there (taints or GPU requests)"}
    assert (chosen.prefill_node, chosen.decode_node) == ("spark", "spark")


TEMPLATES = [
    ("gpu", {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}, 1, True),
    ("l4", {"nvidia.com/gpu.product": "NVIDIA-L4"}, 1, True),
    ("mac", {"hybridinference.dev/device": "m2-ultra"}, 0, True),
    ("board", {"kubernetes.io/arch": "arm64"}, 0, True),
    ("cordoned", {"hybridinference.dev/device": "h200"}, 0, False),
]


@settings(max_examples=60, deadline=None)
@given(
    picks=st.lists(st.tuples(st.sampled_from(TEMPLATES), st.sets(st.sampled_from(["prefill", "decode"]))),
                   min_size=1, max_size=5),
    prompt=st.integers(1, 32768),
)  # fmt: skip
def test_auto_placement_only_uses_known_eligible_nodes_and_beats_every_single_node(
    picks: list[tuple[tuple[str, dict[str, str], int, bool], set[str]]], prompt: int
) -> None:
    nodes = [
        NodeInfo(f"{kind}-{i}", labels, {}, gpus, ok) for i, ((kind, labels, gpus, ok), _) in enumerate(picks)
    ]
    roles = {node.name: allowed for node, (_, allowed) in zip(nodes, picks, strict=True)}
    try:
        chosen = plan_placement(nodes, LLAMA, Request(prompt, 64), TEN_GBE, roles=roles)
    except NoPlacementError as exc:  # every refusal names its cause
        reasons = ("no node with a known device profile", "may run the", "fits on none", "no placement fits")
        assert any(reason in str(exc) for reason in reasons), str(exc)
        return
    assert "prefill" in roles[chosen.prefill_node] and "decode" in roles[chosen.decode_node]
    assert chosen.prefill_node not in chosen.excluded and chosen.decode_node not in chosen.excluded
    assert all(name in chosen.excluded for name in roles if name.startswith(("board", "cordoned")))
    if chosen.plan.best_single is not None:  # the best node that may run both roles alone
        assert chosen.total_seconds <= chosen.plan.best_single.total_seconds


def test_no_node_allowed_to_decode_is_named() -> None:
    with pytest.raises(NoPlacementError, match=r"none of the known nodes \(spark\) may run the decode pods"):
        plan_placement([SPARK], LLAMA, EXO_REQUEST, TEN_GBE, roles={"spark": {"prefill"}})
