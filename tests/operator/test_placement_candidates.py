"""placement.mode auto without decode.agent: Nodes and live agents weighed together (pure parts)."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from hybrid_operator.agent_auto import as_named
from hybrid_operator.agent_contract import AgentLease, WorkerPhase, WorkerReport
from hybrid_operator.agent_world import LeaseClock
from hybrid_operator.models import API_VERSION, HybridInference, parse
from hybrid_operator.placement import NodeFacts, resolve_placement
from hybrid_operator.placement.candidates import AgentSighting, choose

NOW = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
GB10 = {"nvidia.com/gpu.product": "NVIDIA-GB10", "kubernetes.io/hostname": "spark-1"}
SPARK = NodeFacts("spark", GB10, gpus=1)
TLS = {"tls": {"enabled": True, "secretName": "kv", "mutual": True}}
AUTO: dict[str, Any] = {
    "model": {"source": "meta-llama/Llama-3.1-8B-Instruct", "dtype": "float16"},
    "placement": {"mode": "auto"},
    "kvTransfer": TLS,
}


def resource(**updates: Any) -> HybridInference:
    meta = {"name": "chat", "namespace": "inference", "uid": "u", "generation": 1}
    body = {"apiVersion": API_VERSION, "kind": "HybridInference", "metadata": meta, "spec": AUTO | updates}
    return parse(body)


def seen(name: str = "mac", silent_s: float = 1.0, renewing: bool = True, **lease: Any) -> AgentSighting:
    """A live agent by default: renewed a second ago, with a 30 s Lease."""
    fields: dict[str, Any] = {"device_profile": "m3-ultra", "engine": "mlx", "device": "metal"}
    fields |= {"renewed": NOW - datetime.timedelta(seconds=1), "duration_s": 30, **lease}
    return AgentSighting(AgentLease(name, address="192.0.2.7", **fields), silent_s, renewing)


def test_an_agent_predicted_faster_than_every_node_gets_decode_and_prefill_stays_on_the_node() -> None:
    node_only = resolve_placement(resource().spec, [SPARK]).prediction
    choice = choose(resource(), [SPARK], [seen()], NOW)
    assert choice.agent is not None and choice.agent.name == "mac"
    placement = choice.placement
    assert placement is not None and not placement.problems
    assert (placement.prefill_nodes, placement.decode_nodes) == (("spark",), ("agent:mac",))
    assert placement.prefill_selector == {"kubernetes.io/hostname": "spark-1"}
    assert placement.prediction is not None and node_only is not None
    assert placement.prediction.decode_tokens_per_second > node_only.decode_tokens_per_second
    assert (
        "decode on agent:mac (m3-ultra, from agent device profile m3-ultra, engine mlx/metal"
        in placement.reason
    )


def test_a_node_faster_than_every_agent_keeps_decode_and_the_reason_names_the_agents_weighed() -> None:
    slow = seen(device_profile="m1-max", engine="torch", device="mps")  # 400 GB/s x 0.47
    choice = choose(resource(), [SPARK], [slow], NOW)
    assert choice.agent is None and choice.placement is None
    assert choice.note == "agents weighed: agent:mac"


@pytest.mark.parametrize(
    ("sighting", "why"),
    [
        (seen("old", renewing=False, renewed=NOW - datetime.timedelta(hours=1)), "last renewed 3600 s ago"),
        (seen("old", silent_s=31.0), "Lease not renewed for 31 s (lease 30 s)"),
        (seen("old", state="stopped"), "shut down"),
        (seen("old", renewed=None), "never renewed"),
    ],
)
def test_an_expired_or_stopped_agent_is_ignored_with_its_reason(sighting: AgentSighting, why: str) -> None:
    slow = seen(device_profile="m1-max", engine="torch", device="mps")
    choice = choose(resource(), [SPARK], [sighting, slow], NOW)
    assert choice.agent is None  # the fast agent would win were it live
    assert why in choice.excluded["agent:old"]
    assert choice.note.startswith("agents weighed: agent:mac; agents left out: agent:old: ")


def test_a_first_seen_agent_with_a_skewed_clock_is_live_within_the_slack() -> None:
    skewed = seen(renewing=False, renewed=NOW - datetime.timedelta(seconds=90))  # 30 s lease + 120 s slack
    assert choose(resource(), [SPARK], [skewed], NOW).agent is not None


def test_agents_are_not_candidates_without_mtls_on_the_kv_link() -> None:
    choice = choose(resource(kvTransfer={}), [SPARK], [seen()], NOW)
    assert choice.agent is None and "needs mTLS" in choice.excluded["agent:mac"]


def test_an_agent_whose_port_another_resource_holds_is_not_a_candidate() -> None:
    other = {"inference/other": WorkerReport(WorkerPhase.READY, port=8000)}
    choice = choose(resource(), [SPARK], [seen(workers=other)], NOW)
    assert (
        choice.agent is None and choice.excluded["agent:mac"] == "port 8000 is taken there by inference/other"
    )


def test_free_memory_caps_the_agent_unless_it_already_runs_this_resource() -> None:
    small = 4 * 10**9  # 8B float16 weights alone are 16 GB
    assert choose(resource(), [SPARK], [seen(free_memory_bytes=small)], NOW).agent is None
    mine = {"inference/chat": WorkerReport(WorkerPhase.READY, port=8000)}
    assert choose(resource(), [SPARK], [seen(free_memory_bytes=small, workers=mine)], NOW).agent is not None


def test_when_nothing_fits_the_problem_names_every_node_and_agent() -> None:
    big = resource(model={"source": "meta-llama/Llama-3.1-70B-Instruct", "dtype": "float16"})
    small = seen(device_profile="m1-max")
    old = seen("old", state="stopped")
    choice = choose(big, [SPARK, NodeFacts("pi", {"kubernetes.io/arch": "arm64"})], [small, old], NOW)
    assert choice.placement is not None and choice.placement.problems
    problem = choice.placement.problems[0]
    assert problem.startswith("placement.mode auto: no Node or agent can serve:")
    for candidate in (
        "spark: nvidia.com/gpu.product=NVIDIA-GB10",
        "pi: arm64 node",
        "agent:mac: agent",
        "agent:old",
    ):
        assert candidate in problem


def test_without_agent_leases_the_node_path_decides_alone() -> None:
    choice = choose(resource(), [SPARK], [], NOW)
    assert choice.agent is None and choice.placement is None and not choice.note


def test_the_chosen_agent_is_named_with_its_announced_tls_folder() -> None:
    named = as_named(resource(), AgentLease("mac", tls_dir="/Users/ai/tls"))
    assert named.spec.decode.agent is not None
    assert (named.spec.decode.agent.name, named.spec.decode.agent.tls_dir) == ("mac", "/Users/ai/tls")
    assert named.spec.decode.agent.fallback == "none" and named.spec.placement.mode == "auto"
    default = as_named(resource(), AgentLease("mac")).spec.decode.agent
    assert default is not None and default.tls_dir == "/etc/hybrid-inference/tls"


def test_the_lease_clock_tells_a_renewal_from_a_first_reading() -> None:
    clock = LeaseClock()
    assert clock.silent_for("ns", "mac", "t1") == 0.0 and not clock.renewing("ns", "mac")
    clock.silent_for("ns", "mac", "t1")
    assert not clock.renewing("ns", "mac")  # the same value again: no renewal seen
    clock.silent_for("ns", "mac", "t2")
    assert clock.renewing("ns", "mac")
