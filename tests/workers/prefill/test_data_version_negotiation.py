"""The data version between real workers: the highest both speak, so a peer at data version 1 (CRC-32
payload checksums) or 2 (CRC-32C) keeps the data connection with a newer one, in both directions,
bit-exact."""

from __future__ import annotations

import grpc
import pytest
import torch
from hybrid_workers.decode.prefill_client import PrefillClient
from hybrid_workers.engine import SamplingParams
from hybrid_workers.kv import handshake
from hybrid_workers.kv.data_frame import DATA_VERSION
from hybrid_workers.kv.proto import kv_pb2_grpc
from hybrid_workers.prefill import data_sender, servicer
from kv_transfer_helpers import prompt

GREEDY = SamplingParams(max_tokens=1, temperature=0)


@pytest.fixture
def sender_versions(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The data version of every connection the prefill worker's senders claimed (its checksum's)."""
    versions: list[int] = []
    real = data_sender.payload_checksum

    def spy(version: int):  # -> PayloadChecksum
        versions.append(version)
        return real(version)

    monkeypatch.setattr(data_sender, "payload_checksum", spy)
    return versions


def _layers(remote) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(layer.keys.clone(), layer.values.clone()) for layer in remote.cache.layers]


def _same_as_grpc_frames(tiny_lm, target: str) -> None:
    ids = prompt(41, seed=5)
    with (
        PrefillClient(target, tiny_lm) as tcp,
        PrefillClient(target, tiny_lm, data_connection=False) as frames,
    ):
        over_tcp, over_grpc = tcp.prefill(ids, GREEDY), frames.prefill(ids, GREEDY)
    assert (over_tcp.timings.transport, over_grpc.timings.transport) == ("tcp", "grpc")
    for (k1, v1), (k2, v2) in zip(_layers(over_tcp), _layers(over_grpc), strict=True):
        assert torch.equal(k1, k2) and torch.equal(v1, v2)


@pytest.mark.parametrize(
    ("caller", "offered"), [(1, 1), (2, 2), (3, 3), (9, DATA_VERSION), (0, DATA_VERSION)]
)
def test_the_handshake_offers_the_callers_data_version_when_older(
    tiny_lm, prefill_server, caller: int, offered: int
) -> None:
    request = handshake.request_pb(handshake.Side.of(tiny_lm))
    request.data_version = caller
    with grpc.insecure_channel(f"127.0.0.1:{prefill_server.port}") as channel:
        reply = kv_pb2_grpc.PrefillWorkerStub(channel).Handshake(request, timeout=10)
    assert reply.compatible and reply.data_port
    assert reply.data_version == offered  # a release comparing for equality (1) still sees its own


def test_current_workers_speak_data_version_3(tiny_lm, prefill_server, sender_versions) -> None:
    _same_as_grpc_frames(tiny_lm, f"127.0.0.1:{prefill_server.port}")
    assert sender_versions == [DATA_VERSION] == [3]


def test_a_prefill_worker_at_data_version_1_gets_a_crc32_connection(
    tiny_lm, prefill_server, sender_versions, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(servicer, "negotiate", lambda _theirs: 1)  # it offers 1 whatever the caller says
    _same_as_grpc_frames(tiny_lm, f"127.0.0.1:{prefill_server.port}")
    assert sender_versions == [1]


@pytest.mark.parametrize("version", [1, 2])
def test_an_older_decode_worker_is_served_its_own_data_version(
    tiny_lm, prefill_server, sender_versions, monkeypatch: pytest.MonkeyPatch, version: int
) -> None:
    monkeypatch.setattr(handshake, "DATA_VERSION", version)  # its handshake says 1 (CRC-32) or 2 (CRC-32C)
    _same_as_grpc_frames(tiny_lm, f"127.0.0.1:{prefill_server.port}")
    assert sender_versions == [version]
