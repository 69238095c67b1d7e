"""Prefill routing policy: threshold, fallback reasons, fail policy, readiness (real and stub peers)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hybrid_workers.decode.config import DecodeConfig
from hybrid_workers.decode.prefill_client import PrefillClient
from hybrid_workers.decode.routing import PrefillRouter, RemotePrefillFailed
from hybrid_workers.engine import SamplingParams
from hybrid_workers.kv.errors import KVProtocolError, Reason
from hybrid_workers.kv.handshake import Side, Verdict
from hybrid_workers.metrics import PrefillSite, sample_value
from hybrid_workers.prefill.config import PrefillServerConfig
from hybrid_workers.prefill.server import start_server

GREEDY = SamplingParams(max_tokens=4, temperature=0)


class FailingPeer:
    """A prefill peer that handshakes fine but fails every prefill with `reason` (a broken worker)."""

    def __init__(self, reason: Reason) -> None:
        self.reason = reason
        self.calls = 0

    def prefill(self, token_ids: Any, params: Any, slot: Any = None, cancel: Any = None) -> Any:
        self.calls += 1
        raise KVProtocolError(self.reason, "simulated")

    def probe(self, timeout_s: float = 2.0) -> Verdict:
        side = Side("0" * 32, "stub", "float32")
        return Verdict(side, "stub-instance", 4, None)


def router(peer: Any, **overrides: Any) -> PrefillRouter:
    """A router whose breaker was closed by one probe (no background prober). A fresh model label per
    router, so metric counts never carry over from another test (an id() would: CPython reuses the id
    of a collected peer)."""
    config = DecodeConfig(served_model_name=f"routing-{uuid.uuid4().hex}", prefill="peer:1", **overrides)
    routing = PrefillRouter(config, config.served_model_name, peer)
    assert routing.monitor is not None and routing.monitor.probe_now().state == "ready"
    return routing


@pytest.mark.parametrize(
    ("reason", "label"),
    [
        (Reason.TRANSPORT, "unreachable"),
        (Reason.TIMEOUT, "timeout"),
        (Reason.REJECTED, "error"),
        (Reason.CHECKSUM, "protocol"),
        (Reason.FINGERPRINT, "protocol"),
    ],
)
def test_each_failure_falls_back_locally_with_its_reason(reason: Reason, label: str) -> None:
    peer = FailingPeer(reason)
    routing = router(peer, remote_prefill_min_tokens=4)
    plan = routing.plan(list(range(10)), GREEDY)
    assert (plan.site, plan.remote, plan.fallback) == (PrefillSite.LOCAL, None, label)
    labels = {"model": routing.model_label, "reason": label}
    assert sample_value("hybrid_inference_prefill_fallback_total", labels) == 1


def test_short_prompts_never_reach_the_peer() -> None:
    peer = FailingPeer(Reason.TRANSPORT)
    plan = router(peer, remote_prefill_min_tokens=16).plan(list(range(15)), GREEDY)
    assert plan.site is PrefillSite.LOCAL and plan.fallback is None and peer.calls == 0


def test_fail_policy_raises_with_the_reason() -> None:
    routing = router(FailingPeer(Reason.TIMEOUT), remote_prefill_min_tokens=1, fallback="fail")
    with pytest.raises(RemotePrefillFailed, match="timeout") as caught:
        routing.plan([1, 2, 3], GREEDY)
    assert caught.value.reason == "timeout"
    assert routing.readiness().ready is True  # a timeout is one request's failure: the breaker stays closed


def test_a_prefill_worker_of_another_dtype_is_refused_and_prefill_falls_back(
    prefill_lm, tiny_lm_bf16
) -> None:
    running = start_server(prefill_lm, PrefillServerConfig(host="127.0.0.1", port=0))  # float32
    try:
        peer = PrefillClient(f"127.0.0.1:{running.port}", tiny_lm_bf16, timeout_s=30)  # decode side: bf16
        config = DecodeConfig(
            served_model_name="routing-dtype", prefill="peer:1", remote_prefill_min_tokens=1
        )
        routing = PrefillRouter(config, config.served_model_name, peer)
        assert routing.monitor is not None
        status = routing.monitor.probe_now()
        plan = routing.plan(list(range(1, 40)), GREEDY)
        peer.close()
    finally:
        running.stop(0)
    # The handshake refuses the other dtype and says why; no remote attempt is made.
    assert status.state == "incompatible" and "float32" in status.detail and "bfloat16" in status.detail
    assert plan.site is PrefillSite.LOCAL and plan.fallback == "incompatible"
    readiness = routing.readiness()
    assert (readiness.ready, readiness.prefill, readiness.remote) == (True, "incompatible", False)
    attempts = {"model": "routing-dtype", "outcome": "failed"}
    assert sample_value("hybrid_inference_remote_prefill_total", attempts) == 0
