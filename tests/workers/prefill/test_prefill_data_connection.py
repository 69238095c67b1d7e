"""The KV data connection between real workers: exact like gRPC frames, negotiated, and failing one
request cleanly (never stalling others) when the connection never arrives or names another transfer;
layers final together share one gather write."""

from __future__ import annotations

import os
import socket
import threading
import time

import grpc
import pytest
import torch
from hybrid_workers.decode.prefill_client import PrefillClient
from hybrid_workers.engine import SamplingParams
from hybrid_workers.errors import UserError
from hybrid_workers.kv.convert import request_to_pb
from hybrid_workers.kv.data_frame import hello
from hybrid_workers.kv.errors import KVProtocolError, Reason
from hybrid_workers.kv.frames import KVRequest
from hybrid_workers.kv.proto import kv_pb2_grpc
from hybrid_workers.prefill import servicer
from hybrid_workers.prefill.data_sender import DataSender
from hybrid_workers.prefill.pipe import LayerPipe
from kv_transfer_helpers import assert_matches_generate, prompt
from support.prefill import prefill_server as serving

GREEDY = SamplingParams(max_tokens=8, temperature=0)


def _layers(remote) -> list[tuple[torch.Tensor, torch.Tensor]]:
    cache = remote.cache
    return [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers]


@pytest.mark.parametrize("mode", ["layerwise", "bulk"])
def test_the_data_connection_gives_the_same_bits_as_grpc_frames(tiny_lm, prefill_server, mode: str) -> None:
    ids = prompt(57, seed=3)
    target = f"127.0.0.1:{prefill_server.port}"
    with (
        PrefillClient(target, tiny_lm, mode=mode) as tcp,
        PrefillClient(target, tiny_lm, mode=mode, data_connection=False) as frames,
    ):
        over_tcp, over_grpc = tcp.prefill(ids, GREEDY), frames.prefill(ids, GREEDY)
    assert (over_tcp.timings.transport, over_grpc.timings.transport) == ("tcp", "grpc")
    assert over_tcp.first_token == over_grpc.first_token
    assert over_tcp.first_logprob == over_grpc.first_logprob
    for (k1, v1), (k2, v2) in zip(_layers(over_tcp), _layers(over_grpc), strict=True):
        assert torch.equal(k1, k2) and torch.equal(v1, v2)
    assert over_tcp.timings.bytes == over_grpc.timings.bytes
    assert over_tcp.timings.wire_s > 0 and over_tcp.timings.goodput_bytes_per_s > 0
    assert len(over_tcp.trailer.layer_send_seconds) == tiny_lm.num_layers
    assert_matches_generate(tiny_lm, over_tcp, ids)


def test_a_worker_with_the_data_port_off_sends_grpc_frames(tiny_lm) -> None:
    with (
        serving(tiny_lm, data_port=None) as running,
        PrefillClient(f"127.0.0.1:{running.port}", tiny_lm) as client,
    ):
        assert client.handshake().problem is None
        remote = client.prefill(prompt(20), GREEDY)
    assert remote.timings.transport == "grpc"
    assert_matches_generate(tiny_lm, remote, prompt(20))


def test_an_unreachable_data_port_falls_back_to_grpc_frames(tiny_lm, prefill_server) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed_port = unused.getsockname()[1]  # bound, never listening: connections are refused
        with PrefillClient(f"127.0.0.1:{prefill_server.port}", tiny_lm, data_port=closed_port) as client:
            remote = client.prefill(prompt(20), GREEDY)
    assert remote.timings.transport == "grpc"


@pytest.mark.parametrize("hello_for", ["nobody", "another transfer"])
def test_a_data_connection_that_never_arrives_fails_that_request_only(tiny_lm, hello_for: str) -> None:
    with serving(tiny_lm, data_connect_timeout_s=0.5) as running:
        target = f"127.0.0.1:{running.port}"
        transfer_id = os.urandom(16)
        stray = None
        if hello_for == "another transfer":
            stray = socket.create_connection(("127.0.0.1", running.data_port))
            stray.sendall(hello(os.urandom(16)))
        ok: list[object] = []
        with PrefillClient(target, tiny_lm) as other:
            meanwhile = threading.Thread(target=lambda: ok.append(other.prefill(prompt(30), GREEDY)))
            meanwhile.start()
            request = KVRequest(token_ids=tuple(prompt(30)), transfer_id=transfer_id, heartbeat_ms=100)
            with grpc.insecure_channel(target) as channel:
                stream = kv_pb2_grpc.PrefillWorkerStub(channel).Prefill(request_to_pb(request), timeout=30)
                with pytest.raises(grpc.RpcError) as failed:
                    list(stream)
            meanwhile.join(timeout=60)
        if stray is not None:
            stray.close()
    assert failed.value.code() is grpc.StatusCode.UNAVAILABLE
    assert f"data connection for transfer {transfer_id.hex()} did not arrive within 0.5 s" in str(
        failed.value.details()
    )
    assert len(ok) == 1  # the other request was served meanwhile


def test_a_transfer_id_of_the_wrong_size_is_refused(tiny_lm, prefill_server) -> None:
    request = KVRequest(token_ids=tuple(prompt(10)), transfer_id=b"short")
    with grpc.insecure_channel(f"127.0.0.1:{prefill_server.port}") as channel:
        stream = kv_pb2_grpc.PrefillWorkerStub(channel).Prefill(request_to_pb(request), timeout=30)
        with pytest.raises(grpc.RpcError) as refused:
            list(stream)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "transfer id of 5 bytes; use 16 bytes" in str(refused.value.details())


def test_the_header_names_the_replica_the_data_connection_goes_to(tiny_lm) -> None:
    with (
        serving(tiny_lm, data_host="127.0.0.1") as running,
        PrefillClient(f"localhost:{running.port}", tiny_lm) as client,
    ):
        remote = client.prefill(prompt(20), GREEDY)
    assert remote.timings.transport == "tcp"


def test_a_data_connection_that_cannot_open_fails_that_request_then_frames_are_used(tiny_lm) -> None:
    # 127.0.0.2 is loopback too, but nothing listens there: the announced address refuses
    with (
        serving(tiny_lm, data_host="127.0.0.2") as running,
        PrefillClient(f"127.0.0.1:{running.port}", tiny_lm) as client,
    ):
        with pytest.raises(KVProtocolError, match=r"data connection to 127\.0\.0\.2:\d+ failed") as failed:
            client.prefill(prompt(20), GREEDY)
        assert failed.value.reason is Reason.TRANSPORT
        assert client.prefill(prompt(20), GREEDY).timings.transport == "grpc"
        client.handshake()  # the next handshake offers it again (the port opens on the dialled host)
        with pytest.raises(KVProtocolError):
            client.prefill(prompt(20), GREEDY)


def test_the_data_checksum_can_be_turned_off_and_the_bits_stay_exact(tiny_lm, prefill_server) -> None:
    ids = prompt(40, seed=8)
    target = f"127.0.0.1:{prefill_server.port}"
    with PrefillClient(target, tiny_lm, data_checksum="off") as client:
        assert client.data_checksum is False
        remote = client.prefill(ids, GREEDY)
    assert remote.timings.transport == "tcp"
    assert_matches_generate(tiny_lm, remote, ids)
    with pytest.raises(UserError, match="--kv-data-checksum 'maybe'"):
        PrefillClient(target, tiny_lm, data_checksum="maybe")


def test_heartbeats_keep_a_data_connection_transfer_alive_through_a_slow_layer(
    tiny_lm, prefill_server
) -> None:
    # The first layer computes for 3 stall limits: nothing moves on the data connection meanwhile, only
    # the gRPC stream's heartbeats, which must count as progress while the layers are awaited there.
    first_layer = tiny_lm.model.model.layers[0]
    handle = first_layer.register_forward_pre_hook(lambda *_: time.sleep(1.5))  # returns None: args kept
    try:
        with PrefillClient(f"127.0.0.1:{prefill_server.port}", tiny_lm, stall_s=0.5) as client:
            remote = client.prefill(prompt(20), GREEDY)
    finally:
        handle.remove()
    assert remote.timings.transport == "tcp"
    assert_matches_generate(tiny_lm, remote, prompt(20))


def test_an_override_port_goes_to_the_dialled_host_not_the_private_address_announced(tiny_lm) -> None:
    # A decode agent outside the cluster: the Header names a pod IP it cannot reach (127.0.0.2 here,
    # where nothing listens); --prefill-data-port is the NodePort at the host it dialled for gRPC.
    with (
        serving(tiny_lm, data_host="127.0.0.2") as running,
        PrefillClient(f"127.0.0.1:{running.port}", tiny_lm, data_port=running.data_port) as client,
    ):
        remote = client.prefill(prompt(20), GREEDY)
    assert remote.timings.transport == "tcp"
    assert_matches_generate(tiny_lm, remote, prompt(20))


@pytest.fixture
def send_batches(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """The layer indices of every gather write the prefill worker's data senders made."""
    batches: list[list[int]] = []
    real = DataSender.send

    def spy(self, items):  # -> list[float]
        batches.append([item.index for item in items])
        return real(self, items)

    monkeypatch.setattr(DataSender, "send", spy)
    return batches


class _PipeUntil(LayerPipe):
    """A LayerPipe whose first get waits until `count` items were put, and whose later puts wait until
    the sender took what was ready after that get (hooks: no timing involved)."""

    count = 0

    def __init__(self, maxsize: int) -> None:
        super().__init__(maxsize)
        self._put = threading.Semaphore(0)
        self._puts = 0
        self._waited = False
        self._drained = threading.Event()

    def put(self, item) -> None:
        if self._puts >= self.count:  # only the compute thread puts: no race on the count
            assert self._drained.wait(timeout=60), "the sender never took the layers that piled up"
        self._puts += 1
        super().put(item)
        self._put.release()

    def ready(self):  # -> list[Item]
        items = super().ready()
        self._drained.set()
        return items

    def get(self, wait_s=None):  # -> Item | None
        if not self._waited:
            self._waited = True
            for _ in range(self.count):
                assert self._put.acquire(timeout=60), "the prefill never put its items"
        return super().get(wait_s)


def test_a_bulk_transfer_goes_out_in_one_gather_write(
    tiny_lm, prefill_server, send_batches, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the sender looks only once every layer and the trailer are in the pipe
    monkeypatch.setattr(servicer, "LayerPipe", type("Held", (_PipeUntil,), {"count": tiny_lm.num_layers + 1}))
    ids = prompt(33, seed=4)
    with PrefillClient(f"127.0.0.1:{prefill_server.port}", tiny_lm, mode="bulk") as client:
        remote = client.prefill(ids, GREEDY)
    assert send_batches == [list(range(tiny_lm.num_layers))]
    assert remote.timings.transport == "tcp"
    assert len(remote.trailer.layer_send_seconds) == tiny_lm.num_layers
    assert_matches_generate(tiny_lm, remote, ids)


def test_layerwise_layers_that_piled_up_share_a_write_and_each_arrives_once(
    tiny_lm, prefill_server, send_batches, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the sender starts only once the pipe is full (pipe_layers = 3): those go out together
    monkeypatch.setattr(servicer, "LayerPipe", type("Held", (_PipeUntil,), {"count": 3}))
    ids = prompt(33, seed=4)
    with PrefillClient(f"127.0.0.1:{prefill_server.port}", tiny_lm, mode="layerwise") as client:
        remote = client.prefill(ids, GREEDY)
    assert send_batches[0] == [0, 1, 2]
    assert [index for batch in send_batches for index in batch] == list(range(tiny_lm.num_layers))
    assert_matches_generate(tiny_lm, remote, ids)
