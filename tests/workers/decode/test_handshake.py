"""The compatibility handshake against real prefill workers: /ready states, refusals naming both sides."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hybrid_workers.decode.prefill_client import PrefillClient
from hybrid_workers.engine import load_model
from hybrid_workers.kv.errors import Reason
from hybrid_workers.kv.frames import PROTOCOL_VERSION
from hybrid_workers.kv.handshake import INSTANCE_ID
from hybrid_workers.metrics import sample_value
from hybrid_workers.prefill.config import PrefillServerConfig
from hybrid_workers.prefill.server import start_server
from support.models import one_element_changed

LONG_PROMPT = "The handshake decides whether this prompt may prefill on the other worker at all. " * 2


@pytest.fixture(scope="module")
def other_weights_worker(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A prefill worker whose model differs from the tiny model in exactly one weight element."""
    folder = one_element_changed(tiny_model_dir, tmp_path_factory.mktemp("other") / "model")
    lm = load_model(str(folder), device="cpu", dtype="float32", progress=False)
    running = start_server(lm, PrefillServerConfig(host="127.0.0.1", port=0))
    yield running, lm
    running.stop(0)


@pytest.fixture(scope="module")
def same_model_worker(prefill_lm: Any) -> Iterator[Any]:
    running = start_server(prefill_lm, PrefillServerConfig(host="127.0.0.1", port=0))
    yield running
    running.stop(0)


def test_a_model_differing_in_one_weight_element_is_refused_naming_both_identities(
    tiny_lm, other_weights_worker
) -> None:
    running, other = other_weights_worker
    assert other.fingerprint != tiny_lm.fingerprint
    with PrefillClient(f"127.0.0.1:{running.port}", tiny_lm) as client:
        verdict = client.handshake()
    assert verdict.problem is not None and verdict.problem.reason is Reason.FINGERPRINT
    message = str(verdict.problem)
    assert other.fingerprint in message and tiny_lm.fingerprint in message
    assert verdict.peer.model_identity == other.fingerprint


def test_a_compatible_worker_is_ready_with_its_wire_version_and_instance(tiny_lm, same_model_worker) -> None:
    with PrefillClient(f"127.0.0.1:{same_model_worker.port}", tiny_lm) as client:
        verdict = client.probe()
    assert verdict.problem is None
    assert verdict.peer.wire_version == PROTOCOL_VERSION and verdict.instance_id == INSTANCE_ID
    assert verdict.num_layers == tiny_lm.num_layers


@pytest.mark.parametrize(("fallback", "status"), [("local", 200), ("fail", 503)])
def test_ready_says_incompatible_with_the_reason_and_no_request_tries_remote(
    module_decode_server, tiny_lm, other_weights_worker, fallback: str, status: int
) -> None:
    running, other = other_weights_worker
    target = f"127.0.0.1:{running.port}"
    peer = PrefillClient(target, tiny_lm, timeout_s=30)
    server = module_decode_server(peer, prefill=target, remote_prefill_min_tokens=4, fallback=fallback)
    with server.client() as client:
        ready = client.get("/ready")
        reply = client.post(
            "/v1/completions", json={"model": server.name, "prompt": LONG_PROMPT, "max_tokens": 2}
        )
    body = ready.json()
    assert ready.status_code == status
    assert (body["prefill"], body["fallback"], body["remote"]) == ("incompatible", fallback, False)
    assert other.fingerprint in body["detail"] and tiny_lm.fingerprint in body["detail"]
    assert reply.status_code == (200 if fallback == "local" else 503)
    assert reply.headers["X-Request-Id"]  # on errors too
    attempts = sum(
        sample_value("hybrid_inference_remote_prefill_total", {"model": server.name, "outcome": outcome})
        for outcome in ("success", "failed", "cancelled")
    )
    assert attempts == 0
    if fallback == "local":
        labels = {"model": server.name, "reason": "incompatible"}
        assert sample_value("hybrid_inference_prefill_fallback_total", labels) == 1
