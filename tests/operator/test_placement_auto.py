"""placement.mode auto in the operator: nodes -> planner -> pinned roles, status prediction, decode flags."""

from __future__ import annotations

from typing import Any

from hybrid_operator.config import OperatorConfig
from hybrid_operator.models import API_VERSION, HybridInference, HybridInferenceSpec, parse
from hybrid_operator.placement import NodeFacts, Taint, resolve_placement
from hybrid_operator.render import render
from hybrid_operator.status import RoleState, ready_status

GB10 = {
    "nvidia.com/gpu.product": "NVIDIA-GB10",
    "kubernetes.io/arch": "arm64",
    "kubernetes.io/hostname": "spark-1",
}
SPARK = NodeFacts("spark", GB10, gpus=1)
MAC = NodeFacts(
    "mac",
    {"kubernetes.io/arch": "arm64", "hybridinference.dev/device": "m3-ultra"},
    taints=(Taint("hybridinference.dev/mac", "true"),),
)
PI = NodeFacts("raspberry", {"kubernetes.io/arch": "arm64"})
MAC_TOLERATION = {"key": "hybridinference.dev/mac", "operator": "Exists", "effect": "NoSchedule"}
AUTO: dict[str, Any] = {
    "model": {"source": "meta-llama/Llama-3.1-8B-Instruct", "dtype": "float16"},
    "prefill": {"device": "cuda", "gpus": 1},
    "decode": {"device": "cpu", "tolerations": [MAC_TOLERATION]},
    "placement": {"mode": "auto"},
}
CONFIG = OperatorConfig(prefill_image="reg/prefill:1", decode_image="reg/decode:1")


def spec(**updates: Any) -> HybridInferenceSpec:
    return HybridInferenceSpec.model_validate({**AUTO, **updates})


def resource(body_spec: dict[str, Any]) -> HybridInference:
    metadata = {"name": "auto", "namespace": "inference", "uid": "u"}
    return parse(
        {"apiVersion": API_VERSION, "kind": "HybridInference", "metadata": metadata, "spec": body_spec}
    )


def decode_env(body_spec: dict[str, Any], nodes: list[NodeFacts]) -> dict[str, str]:
    cr = resource(body_spec)
    placement = resolve_placement(cr.spec, nodes)
    decode = next(m for m in render(cr, placement, CONFIG) if m["metadata"]["name"] == "auto-decode")
    return {e["name"]: e["value"] for e in decode["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_the_gpu_node_prefills_the_mac_decodes_and_unknown_nodes_are_named() -> None:
    placement = resolve_placement(spec(), [PI, MAC, SPARK])
    assert not placement.problems
    assert (placement.prefill_nodes, placement.decode_nodes) == (("spark",), ("mac",))
    assert placement.prefill_selector == {"kubernetes.io/hostname": "spark-1"}
    assert placement.decode_selector == {"kubernetes.io/hostname": "mac"}
    assert placement.reason.startswith(
        "auto: prefill on spark (dgx-spark, from nvidia.com/gpu.product=NVIDIA-GB10)"
    )
    assert "excluded: raspberry: arm64 node without a GPU" in placement.reason
    assert placement.prediction is not None and placement.prediction.speedup_vs_best_single_node > 1
    assert isinstance(placement.prediction.remote_prefill_min_tokens, int)


def test_the_untolerated_mac_is_not_used_for_decode() -> None:
    placement = resolve_placement(spec(decode={"device": "cpu"}), [MAC, SPARK])
    assert (placement.prefill_nodes, placement.decode_nodes) == (("spark",), ("spark",))
    assert "mac: neither role's pods can run there" in placement.reason


def test_decode_worker_gets_the_prediction_and_the_planned_threshold() -> None:
    predicted = resolve_placement(spec(), [MAC, SPARK]).prediction
    assert predicted is not None
    env = decode_env(AUTO, [MAC, SPARK])
    assert float(env["HYBRID_INFERENCE_PREDICTED_TTFT_SECONDS"]) == predicted.ttft_seconds
    assert (
        float(env["HYBRID_INFERENCE_PREDICTED_DECODE_TOKENS_PER_SECOND"])
        == predicted.decode_tokens_per_second
    )
    assert env["HYBRID_INFERENCE_REMOTE_PREFILL_MIN_TOKENS"] == str(predicted.remote_prefill_min_tokens)


def test_an_explicit_threshold_in_the_spec_wins_over_the_plan() -> None:
    env = decode_env({**AUTO, "serving": {"remotePrefillMinTokens": 700}}, [MAC, SPARK])
    assert env["HYBRID_INFERENCE_REMOTE_PREFILL_MIN_TOKENS"] == "700"
    assert "HYBRID_INFERENCE_PREDICTED_TTFT_SECONDS" in env


def test_manual_placement_adds_no_prediction_flags() -> None:
    manual = {**AUTO, "placement": {"mode": "manual"}, "prefill": {"device": "cuda", "gpus": 1}}
    env = decode_env(manual, [MAC, SPARK])
    assert not [name for name in env if "PREDICTED" in name]
    assert env["HYBRID_INFERENCE_REMOTE_PREFILL_MIN_TOKENS"] == "auto"


def test_status_carries_the_prediction_and_threshold() -> None:
    cr = resource(AUTO)
    placement = resolve_placement(cr.spec, [MAC, SPARK])
    roles = (RoleState.observe("prefill", 1, None), RoleState.observe("decode", 1, None))
    status = ready_status(cr, placement, roles, {}, "2026-01-01T00:00:00Z")
    assert status["placement"]["prefillNode"] == "spark" and status["placement"]["decodeNode"] == "mac"
    assert set(status["prediction"]) == {
        "ttftSeconds", "decodeTokensPerSecond", "speedupVsBestSingleNode", "remotePrefillMinTokens"
    }  # fmt: skip


def test_only_unknown_nodes_is_a_problem_listing_each_reason() -> None:
    gpu = NodeFacts("mystery", {"nvidia.com/gpu.product": "NVIDIA-B300"}, gpus=8)
    placement = resolve_placement(spec(), [PI, gpu])
    assert placement.problems
    (problem,) = placement.problems
    assert problem.startswith("placement.mode auto: no node with a known device profile")
    assert "mystery: GPU NVIDIA-B300 has no profile" in problem and "raspberry: arm64 node" in problem


def test_a_model_without_a_known_shape_is_a_problem_naming_it() -> None:
    placement = resolve_placement(spec(model={"source": "my-org/custom-13b"}), [MAC, SPARK])
    assert (
        placement.problems == (placement.reason,)
        and "cannot plan: unknown model 'my-org/custom-13b'" in placement.reason
    )


def test_the_default_model_is_planned_when_no_source_is_given() -> None:
    placement = resolve_placement(spec(model={}), [SPARK])
    assert not placement.problems and placement.prefill_nodes == ("spark",)
    smollm2 = resolve_placement(
        spec(model={"source": "HuggingFaceTB/SmolLM2-135M-Instruct", "dtype": "float32"}), [SPARK]
    )
    tiny = resolve_placement(spec(model={"source": "demo-tiny", "dtype": "float32"}), [SPARK])
    assert placement.reason == smollm2.reason != tiny.reason


def test_placement_link_and_request_shape_change_the_plan() -> None:
    slow = resolve_placement(spec(placement={"mode": "auto", "link": "1gbe"}), [MAC, SPARK])
    fast = resolve_placement(spec(placement={"mode": "auto", "link": "25gbe"}), [MAC, SPARK])
    assert "over 1gbe" in slow.reason and "over 25gbe" in fast.reason
    assert slow.prediction is not None and fast.prediction is not None
    assert (
        slow.prediction.remote_prefill_min_tokens is None
        or fast.prediction.remote_prefill_min_tokens is not None
    )
    short = resolve_placement(
        spec(placement={"mode": "auto", "promptTokens": 16, "outputTokens": 512}), [MAC, SPARK]
    )
    assert "16-token prompts, 512 output tokens" in short.reason


def test_an_unknown_link_id_is_a_problem_listing_the_known_ones() -> None:
    placement = resolve_placement(spec(placement={"mode": "auto", "link": "carrier-pigeon"}), [MAC, SPARK])
    assert "cannot plan: unknown link 'carrier-pigeon'" in placement.problems[0]
    assert "10gbe" in placement.problems[0]


def test_the_crd_accepts_the_auto_placement_settings_and_rejects_bad_ones() -> None:
    from crd_schema import validate

    body = {"apiVersion": API_VERSION, "kind": "HybridInference", "metadata": {"name": "auto"}}
    good = {**AUTO, "placement": {"mode": "auto", "link": "25gbe", "promptTokens": 2048, "outputTokens": 64}}
    assert validate({**body, "spec": good}) == []
    assert validate({**body, "spec": {**AUTO, "placement": {"mode": "auto", "promptTokens": 0}}})
