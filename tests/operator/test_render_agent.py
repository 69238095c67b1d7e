"""Pure parts of the decode-agent path: judging a Lease, adapting the pod-path children, the status."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest
from hybrid_operator.agent_contract import AgentLease, WorkerPhase, WorkerReport
from hybrid_operator.agent_status import decode_role, with_agent
from hybrid_operator.agent_world import AgentState, LeaseReading, data_node_port, judge, prefill_address
from hybrid_operator.config import OperatorConfig
from hybrid_operator.models import parse
from hybrid_operator.placement import NodeFacts, NodePlacement, Prediction
from hybrid_operator.placement.agent import plan_with_agent, predict_for_agent
from hybrid_operator.render import render
from hybrid_operator.render_agent import adapt, assignment_data, endpoint_slice
from hybrid_operator.status import RoleState, ready_status

NOW = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
PLACEMENT = NodePlacement(("spark",), ("?",), "test")


def resource(fallback: str = "none") -> Any:
    return parse(
        {
            "apiVersion": "hybridinference.dev/v1alpha1",
            "kind": "HybridInference",
            "metadata": {"name": "chat", "namespace": "inference", "uid": "u", "generation": 1},
            "spec": {
                "decode": {"agent": {"name": "mac", "fallback": fallback}},
                "kvTransfer": {"tls": {"enabled": True, "secretName": "kv", "mutual": True}},
            },
        }
    )


def reading(
    phase: WorkerPhase | None = WorkerPhase.READY, silent_s: float = 0.0, **lease: Any
) -> LeaseReading:
    workers = {} if phase is None else {"inference/chat": WorkerReport(phase, port=8000, config="d1", pid=7)}
    values: dict[str, Any] = {"address": "192.0.2.7", "duration_s": 10, "renewed": NOW, "workers": workers}
    return LeaseReading(AgentLease("mac", **(values | lease)), silent_s)


@pytest.mark.parametrize(
    ("read", "digest", "state", "reason"),
    [
        (reading(), "d1", AgentState.READY, "WorkerReady"),
        (reading(), "d2", AgentState.STARTING, "Updating"),
        (reading(phase=None), "d1", AgentState.STARTING, "Assigned"),
        (reading(silent_s=11), "d1", AgentState.LOST, "AgentLost"),
        (reading(state="stopped"), "d1", AgentState.LOST, "AgentStopped"),
    ],
)
def test_lease_is_judged_by_silence_stop_and_the_digest_of_the_current_assignment(
    read: LeaseReading, digest: str, state: AgentState, reason: str
) -> None:
    view = judge(read, "inference/chat", digest)
    assert (view.state, view.reason) == (state, reason)


def test_refusal_of_the_current_assignment_is_shown_with_the_agents_reason() -> None:
    refused = WorkerReport(WorkerPhase.REFUSED, config="d1", reason="PortInUse", message="port 8000 ...")
    view = judge(reading(workers={"inference/chat": refused}), "inference/chat", "d1")
    assert (view.state, view.reason) == (AgentState.REFUSED, "PortInUse")


def children(fallback: str, read: LeaseReading) -> dict[str, Any]:
    cr = resource(fallback)
    return {
        (m["kind"], m["metadata"]["name"]): m
        for m in adapt(render(cr, PLACEMENT, OperatorConfig()), cr, read)
    }


def test_agent_makes_prefill_a_local_nodeport_admits_the_agent_and_drops_decode_pods() -> None:
    found = children("none", reading())
    prefill = found["Service", "chat-prefill"]["spec"]
    assert (prefill["type"], prefill["externalTrafficPolicy"]) == ("NodePort", "Local")
    assert {"grpc", "kv-data"} <= {port["name"] for port in prefill["ports"]}  # both KV ports get a NodePort
    ingress = found["NetworkPolicy", "chat-prefill"]["spec"]["ingress"]
    assert {
        "from": [{"ipBlock": {"cidr": "192.0.2.7/32"}}],
        "ports": [{"port": 50051, "protocol": "TCP"}, {"port": 50052, "protocol": "TCP"}],
    } in ingress
    assert ("Deployment", "chat-decode") not in found
    assert "selector" not in found["Service", "chat-api"]["spec"]


def test_fallback_deployment_runs_only_while_the_agent_is_lost() -> None:
    serving = children("deployment", reading())
    lost = children("deployment", reading(silent_s=60))
    assert serving["Deployment", "chat-decode"]["spec"]["replicas"] == 0
    assert lost["Deployment", "chat-decode"]["spec"]["replicas"] == 1
    assert serving["Service", "chat-api"]["spec"]["selector"]["app.kubernetes.io/component"] == "decode"


def test_endpoint_slice_points_at_the_worker_and_is_ready_only_while_it_serves() -> None:
    cr = resource()
    ready = endpoint_slice(cr, judge(reading(), "inference/chat", "d1"))
    lost = endpoint_slice(cr, judge(reading(silent_s=60), "inference/chat", "d1"))
    assert ready is not None and lost is not None
    assert ready["metadata"]["labels"]["kubernetes.io/service-name"] == "chat-api"
    assert ready["endpoints"] == [{"addresses": ["192.0.2.7"], "conditions": {"ready": True}}]
    assert ready["ports"][0]["port"] == 8000
    assert lost["endpoints"][0]["conditions"] == {"ready": False}


def test_prefill_address_is_a_prefill_nodes_internal_ip_and_the_allocated_nodeport() -> None:
    service = {"spec": {"ports": [{"port": 50051, "nodePort": 31051}]}}
    nodes = [
        {
            "metadata": {"name": "other"},
            "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.9"}]},
        },
        {
            "metadata": {"name": "spark"},
            "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.5"}]},
        },
    ]
    assert prefill_address(resource(), PLACEMENT, nodes, service) == "10.0.0.5:31051"
    assert prefill_address(resource(), PLACEMENT, nodes, {"spec": {"ports": [{"port": 50051}]}}) is None


def test_the_data_connections_nodeport_reaches_the_agent_as_its_prefill_data_port() -> None:
    service = {"spec": {"ports": [{"port": 50051, "nodePort": 31051}, {"port": 50052, "nodePort": 31052}]}}
    cr = resource()
    assert data_node_port(cr, service) == 31052
    flags = json.loads(assignment_data(cr, "10.0.0.5:31051", None, data_node_port(cr, service))["flags.json"])
    assert (flags["--prefill"], flags["--prefill-data-port"]) == ("10.0.0.5:31051", 31052)
    assert {flags["--tls-cert"], flags["--tls-key"], flags["--tls-ca"]} == {  # mTLS on both KV ports
        "/etc/hybrid-inference/tls/tls.crt",
        "/etc/hybrid-inference/tls/tls.key",
        "/etc/hybrid-inference/tls/ca.crt",
    }
    unallocated = {"spec": {"ports": [{"port": 50051, "nodePort": 31051}, {"port": 50052}]}}
    assert data_node_port(cr, unallocated) is None
    assert "--prefill-data-port" not in json.loads(assignment_data(cr, "10.0.0.5:31051")["flags.json"])
    body = cr.model_dump(by_alias=True, exclude_none=True)
    body["spec"]["decode"]["agent"]["prefillAddress"] = "prefill.lan:50051"
    direct = parse(body)
    assert data_node_port(direct, service) is None  # an address the user gives: the announced data port


def test_lost_agent_makes_the_resource_degraded_with_the_reason_even_while_the_fallback_serves() -> None:
    cr = resource("deployment")
    view = judge(reading(silent_s=60), "inference/chat", "d1")
    fallback = RoleState("decode", 1, 1)
    decode = decode_role(cr, view, fallback)
    assert decode is fallback
    status = ready_status(cr, PLACEMENT, (RoleState("prefill", 1, 1), decode), {}, "t")
    amended = with_agent(status, view, "10.0.0.5:31051", {}, "t")
    assert amended["phase"] == "Degraded" and amended["agent"]["state"] == "Lost"
    degraded = next(c for c in amended["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "AgentLost")


def auto_resource() -> Any:
    body = {
        "apiVersion": "hybridinference.dev/v1alpha1",
        "kind": "HybridInference",
        "metadata": {"name": "chat", "namespace": "inference", "uid": "u"},
        "spec": {
            "model": {"source": "meta-llama/Llama-3.1-8B-Instruct", "dtype": "float16"},
            "placement": {"mode": "auto", "promptTokens": 4096, "outputTokens": 256},
            "decode": {"agent": {"name": "mac"}},
            "kvTransfer": {"tls": {"enabled": True, "secretName": "kv", "mutual": True}},
        },
    }
    return parse(body)


def test_auto_placement_pairs_the_best_prefill_node_with_the_agents_profile() -> None:
    nodes = [
        NodeFacts(
            "spark", labels={"hybridinference.dev/device": "dgx-spark", "kubernetes.io/hostname": "spark"}
        ),
        NodeFacts("cpu-box", labels={"hybridinference.dev/device": "generic-cpu"}),
    ]
    placement = plan_with_agent(auto_resource(), nodes, AgentLease("mac", device_profile="m3-ultra"))
    assert (
        (not placement.problems)
        and placement.prefill_nodes == ("spark",)
        and placement.decode_nodes == ("agent:mac",)
    )
    assert (
        placement.prefill_selector == {"kubernetes.io/hostname": "spark"}
        and placement.decode_selector is None
    )
    assert placement.prediction is not None
    assert placement.prediction.decode_tokens_per_second == pytest.approx(41.2, abs=0.1)  # `plan`'s M3 Ultra


def test_auto_placement_takes_the_rates_of_the_engine_the_agent_reports() -> None:
    nodes = [NodeFacts("spark", labels={"hybridinference.dev/device": "dgx-spark"})]
    leases = {
        engine: AgentLease("mac", engine=engine, device=device, device_profile="m3-ultra")
        for engine, device in (("mlx", "metal"), ("torch", "mps"))
    }
    mlx, mps = (plan_with_agent(auto_resource(), nodes, lease).prediction for lease in leases.values())
    assert mlx is not None and mps is not None
    # torch's MPS backend streams about half of what MLX does on the same Mac (engines.yaml).
    assert mps.decode_tokens_per_second < 0.6 * mlx.decode_tokens_per_second
    mps_reason = plan_with_agent(auto_resource(), nodes, leases["torch"]).reason
    assert "engine torch/mps" in mps_reason


def test_auto_placement_with_an_agent_without_a_profile_says_how_to_announce_one() -> None:
    nodes = [NodeFacts("spark", labels={"hybridinference.dev/device": "dgx-spark"})]
    placement = plan_with_agent(auto_resource(), nodes, AgentLease("mac"))
    assert placement.problems and "decode.agent mac announces no device profile" in placement.problems[0]
    assert "--device-profile" in placement.problems[0]


def test_manual_placement_with_an_agent_predicts_the_selected_prefill_node_paired_with_the_agent() -> None:
    cr = resource()
    nodes = [
        NodeFacts("spark", labels={"hybridinference.dev/device": "dgx-spark"}),
        NodeFacts("rtx", labels={"hybridinference.dev/device": "rtx-4090"}),
    ]
    old = Prediction(
        "spark", "rtx", ttft_seconds=9.0, decode_tokens_per_second=1.0, speedup_vs_best_single_node=1
    )
    pod_path = NodePlacement(("spark",), ("spark", "rtx"), "manual", prediction=old)
    predicted = predict_for_agent(cr, nodes, AgentLease("mac", device_profile="m3-ultra"), pod_path)
    assert predicted.prefill_nodes == ("spark",) and predicted.decode_nodes == ("agent:mac",)
    assert predicted.prediction is not None and predicted.prediction.decode_tokens_per_second > 1.0
    assert (predicted.prediction.prefill_node, predicted.prediction.decode_node) == ("spark", "agent:mac")
    assert predicted.reason == "manual" and predicted.summary == "manual"  # nothing parsed or appended
    unknown = predict_for_agent(cr, nodes, AgentLease("mac"), pod_path)
    assert unknown.prediction is None and "announces no device profile" in unknown.no_prediction
    assert unknown.summary.startswith("manual; no prediction: ")
