"""Manual placement from node facts, and status/conditions from what a pass observed (pure functions)."""

from __future__ import annotations

from typing import Any

from hybrid_operator.models import HybridInferenceSpec, parse
from hybrid_operator.placement import NodeFacts, NodePlacement, Taint, resolve_placement
from hybrid_operator.status import RoleState, invalid_status, ready_status

GPU_NODE = NodeFacts("spark", {"role": "prefill"}, gpus=1)
MAC = NodeFacts("mac", {"role": "decode"}, taints=(Taint("hybridinference.dev/mac", "true"),))
CORDONED = NodeFacts("old-gpu", {"role": "prefill"}, gpus=4, schedulable=False)


def spec(**fields: Any) -> HybridInferenceSpec:
    return HybridInferenceSpec.model_validate(fields)


def test_node_facts_from_a_node_object() -> None:
    node = {
        "metadata": {"name": "spark", "labels": {"a": "b"}},
        "spec": {"taints": [{"key": "gpu", "effect": "NoSchedule"}]},
        "status": {
            "allocatable": {"nvidia.com/gpu": "2"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
    facts = NodeFacts.from_node(node)
    assert (facts.name, facts.gpus, facts.schedulable, facts.taints) == ("spark", 2, True, (Taint("gpu"),))
    cordoned = NodeFacts.from_node({**node, "spec": {"unschedulable": True}})
    assert cordoned.schedulable is False


def test_selector_gpu_and_taints_decide_manual_placement() -> None:
    tolerate_mac = [{"key": "hybridinference.dev/mac", "operator": "Exists"}]
    result = resolve_placement(
        spec(prefill={"gpus": 1, "nodeSelector": {"role": "prefill"}}, decode={"tolerations": tolerate_mac}),
        [GPU_NODE, MAC, CORDONED],
    )
    assert result.prefill_nodes == ("spark",)  # the cordoned 4-GPU node is not a candidate
    assert result.decode_nodes == ("mac", "spark")  # no selector: any node whose taints it tolerates
    assert not result.problems


def test_untolerated_taint_and_missing_gpus_are_problems_naming_the_role() -> None:
    result = resolve_placement(
        spec(
            prefill={"gpus": 2, "nodeSelector": {"role": "prefill"}},
            decode={"nodeSelector": {"role": "decode"}},
        ),
        [GPU_NODE, MAC],
    )
    assert result.problems
    assert [p.split(".")[0] for p in result.problems] == ["prefill", "decode"]
    assert "2 GPU(s)" in result.problems[0]


def test_equal_toleration_must_match_the_value() -> None:
    wrong_value = [{"key": "hybridinference.dev/mac", "operator": "Equal", "value": "false"}]
    result = resolve_placement(spec(decode={"tolerations": wrong_value}), [MAC])
    assert result.decode_nodes == ()


CR = parse({"apiVersion": "hybridinference.dev/v1alpha1", "kind": "HybridInference",
            "metadata": {"name": "x", "namespace": "ns", "generation": 4}, "spec": {}})  # fmt: skip
PLACED = NodePlacement(("spark",), ("mac", "mini"), reason="manual")


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def deployment(available: int, generation: int = 1, observed: int = 1) -> dict[str, Any]:
    return {
        "metadata": {"generation": generation},
        "status": {"availableReplicas": available, "observedGeneration": observed},
    }


def test_both_roles_available_is_ready_with_placement_and_endpoint() -> None:
    roles = (RoleState.observe("prefill", 1, deployment(1)), RoleState.observe("decode", 1, deployment(1)))
    status = ready_status(CR, PLACED, roles, {}, "T1")
    assert status["phase"] == "Ready"
    assert conditions(status)["Ready"] == ("True", "Available")
    assert status["placement"] == {"prefillNode": "spark", "decodeNode": "mac (+1 more)", "reason": "manual"}
    assert status["endpoints"] == {"api": "http://x-api.ns.svc:8000"}
    assert status["observedGeneration"] == 4


def test_a_stale_deployment_status_does_not_count_as_available() -> None:
    state = RoleState.observe("decode", 1, deployment(1, generation=2, observed=1))
    assert not state.ready


def test_losing_a_role_after_ready_is_degraded_and_keeps_unchanged_transition_times() -> None:
    ready = (RoleState("prefill", 1, 1), RoleState("decode", 1, 1))
    first = ready_status(CR, PLACED, ready, {}, "T1")
    later = ready_status(CR, PLACED, (RoleState("prefill", 1, 1), RoleState("decode", 1, 0)), first, "T2")
    assert later["phase"] == "Degraded"
    assert conditions(later)["Degraded"] == ("True", "Degraded")
    times = {c["type"]: c["lastTransitionTime"] for c in later["conditions"]}
    assert times["PrefillReady"] == "T1" and times["DecodeReady"] == "T2"


def test_a_failed_rollout_is_degraded_with_its_message() -> None:
    failed = {
        "status": {
            "conditions": [{"type": "Progressing", "reason": "ProgressDeadlineExceeded", "message": "stuck"}]
        }
    }
    roles = (RoleState.observe("prefill", 1, failed), RoleState("decode", 1, 0))
    status = ready_status(CR, PLACED, roles, {}, "T1")
    assert status["phase"] == "Degraded"
    assert conditions(status)["PrefillReady"] == ("False", "DeploymentFailed")


def test_invalid_status_names_the_reason() -> None:
    status = invalid_status(2, "TLSSecretMissing", "no such Secret", {}, "T1")
    assert status["phase"] == "Invalid" and status["observedGeneration"] == 2
    assert conditions(status)["InvalidSpec"] == ("True", "TLSSecretMissing")
    assert conditions(status)["Ready"][0] == "False"
