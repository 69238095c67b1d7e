"""Manual placement gets the planner's prediction (TTFT/TPS printer columns) for the nodes it allows."""

from __future__ import annotations

from typing import Any

from hybrid_operator.models import API_VERSION, parse
from hybrid_operator.placement import NodeFacts, Taint, resolve_placement, with_prediction
from hybrid_operator.status import RoleState, ready_status

GB10 = {"nvidia.com/gpu.product": "NVIDIA-GB10", "role": "prefill"}
SPARK = NodeFacts("spark", GB10, gpus=1)
MAC = NodeFacts(
    "mac",
    {"hybridinference.dev/device": "m3-ultra", "role": "decode"},
    taints=(Taint("hybridinference.dev/mac", "true"),),
)
PI = NodeFacts("raspberry", {"kubernetes.io/arch": "arm64", "role": "decode"})
MANUAL: dict[str, Any] = {
    "model": {"source": "meta-llama/Llama-3.1-8B-Instruct", "dtype": "float16"},
    "prefill": {"device": "cuda", "gpus": 1, "nodeSelector": {"role": "prefill"}},
    "decode": {
        "device": "cpu",
        "nodeSelector": {"role": "decode"},
        "tolerations": [{"key": "hybridinference.dev/mac", "operator": "Exists"}],
    },
}


def resource(spec: dict[str, Any]) -> Any:
    meta = {"name": "manual", "namespace": "inference", "uid": "u", "generation": 1}
    return parse({"apiVersion": API_VERSION, "kind": "HybridInference", "metadata": meta, "spec": spec})


def test_manual_placement_status_has_a_prediction_for_the_selected_nodes() -> None:
    cr = resource(MANUAL)
    nodes = [SPARK, MAC, PI]
    placement = with_prediction(cr.spec, nodes, resolve_placement(cr.spec, nodes))
    assert placement.prefill_selector == {"role": "prefill"}  # the spec's selectors still decide
    predicted = placement.prediction
    assert predicted is not None and predicted.ttft_seconds > 0 and predicted.decode_tokens_per_second > 0
    assert (predicted.prefill_node, predicted.decode_node) == ("spark", "mac")
    # decode may run on mac or raspberry: the status says which pair the prediction is for
    assert placement.summary.endswith("; predicted for spark + mac") and "predicted" not in placement.reason
    roles = (RoleState("prefill", 1), RoleState("decode", 1))
    status = ready_status(cr, placement, roles, {}, "2026-01-01T00:00:00Z")
    assert set(status["prediction"]) >= {"ttftSeconds", "decodeTokensPerSecond"}


def test_unknown_nodes_leave_the_prediction_empty_and_say_why() -> None:
    cr = resource(MANUAL)
    nodes = [SPARK, PI]
    placement = with_prediction(cr.spec, nodes, resolve_placement(cr.spec, nodes))
    assert not placement.problems and placement.prediction is None
    assert "no prediction:" in placement.summary and "no prediction:" not in placement.reason
