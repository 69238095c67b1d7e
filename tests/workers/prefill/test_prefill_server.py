"""The prefill worker's behaviour: overlap, concurrency, cancellation, admission and refusals."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from collections.abc import Iterator

import grpc
import pytest
import torch
from hybrid_workers.decode import prefill_client
from hybrid_workers.decode.prefill_client import PrefillClient
from hybrid_workers.engine import SamplingParams, prefill
from hybrid_workers.kv.errors import KVProtocolError, Reason
from hybrid_workers.kv.frames import PROTOCOL_VERSION
from hybrid_workers.kv.proto import kv_pb2, kv_pb2_grpc
from hybrid_workers.prefill import job, pipe
from hybrid_workers.prefill.config import PrefillServerConfig
from hybrid_workers.prefill.server import start_server
from kv_transfer_helpers import prompt

GREEDY = SamplingParams(max_tokens=1, temperature=0)


HANG_GUARD_S = 60.0  # a held prefill gives up after this long (a failing test, never a stuck suite)


class GatedLayers:
    """Wraps the engine's prefill on the worker: events say how far it got, and it can hold a layer.

    With `hold_after` set, the prefill waits after handing over that layer until `release` is set.
    """

    def __init__(self) -> None:
        self.started = threading.Event()  # a prefill began
        self.ended = threading.Event()  # a prefill's forward pass returned
        self.aborted = threading.Event()  # a prefill's forward pass raised (e.g. cancelled)
        self.release = threading.Event()
        self.hold_after: int | None = None
        self.released_in_time: bool | None = None  # None: no hold happened
        self.layers_done = 0
        self.tensors: list[weakref.ref] = []  # every K/V tensor handed out

    def __call__(self, lm, token_ids, on_layer):
        self.started.set()

        def gated(index: int, keys: torch.Tensor, values: torch.Tensor) -> None:
            self.tensors.extend((weakref.ref(keys), weakref.ref(values)))
            on_layer(index, keys, values)
            self.layers_done += 1
            if index == self.hold_after:
                self.released_in_time = self.release.wait(HANG_GUARD_S)

        try:
            result = prefill(lm, token_ids, gated)
        except BaseException:
            self.aborted.set()
            raise
        self.ended.set()
        return result


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[GatedLayers]:
    gated = GatedLayers()
    monkeypatch.setattr(job, "prefill", gated)
    yield gated
    gated.release.set()  # never leave a prefill held


@pytest.fixture
def on_layer_received(monkeypatch: pytest.MonkeyPatch) -> list:
    """Callbacks `f(index)` run when the decode side's cache builder took a complete layer."""
    callbacks: list = []

    class ObservedBuilder(prefill_client.CacheBuilder):  # type: ignore[name-defined]
        def add_layer(self, index, keys, values) -> None:  # type: ignore[no-untyped-def]
            super().add_layer(index, keys, values)
            for callback in callbacks:
                callback(index)

    monkeypatch.setattr(prefill_client, "CacheBuilder", ObservedBuilder)
    return callbacks


def wait_until(condition, timeout_s: float = 5.0) -> bool:
    """Poll `condition` until it holds or the time is up (the stream's clean-up runs on gRPC threads)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_layerwise_sends_layer_zero_before_the_last_layer_is_final(
    tiny_lm, prefill_server, gate, on_layer_received
) -> None:
    # The prefill holds before its last layer until the decode side has layer 0: only a stream that
    # sends layers while the forward pass runs can release it.
    gate.hold_after = tiny_lm.num_layers - 2
    on_layer_received.append(lambda index: index == 0 and gate.release.set())
    with PrefillClient(f"127.0.0.1:{prefill_server.port}", tiny_lm) as client:
        client.prefill(prompt(20), GREEDY)
    assert gate.released_in_time is True


def test_bulk_sends_nothing_before_the_prefill_ends(tiny_lm, prefill_server, gate, on_layer_received) -> None:
    ended_when_received: list[bool] = []
    on_layer_received.append(lambda index: ended_when_received.append(gate.ended.is_set()))
    with PrefillClient(f"127.0.0.1:{prefill_server.port}", tiny_lm, mode="bulk") as client:
        client.prefill(prompt(20), GREEDY)
    assert ended_when_received == [True] * tiny_lm.num_layers


def test_concurrent_requests_each_get_their_own_exact_cache(tiny_lm, prefill_server) -> None:
    prompts = [prompt(30 + 10 * i, seed=i) for i in range(4)]
    expected = [prefill(tiny_lm, ids).cache for ids in prompts]
    results: dict[int, object] = {}

    def fetch(i: int) -> None:
        with PrefillClient(f"127.0.0.1:{prefill_server.port}", tiny_lm, chunk_bytes=64 << 10) as client:
            results[i] = client.prefill(prompts[i], GREEDY).cache

    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, cache in results.items():
        for mine, theirs in zip(cache.layers, expected[i].layers, strict=True):  # type: ignore[attr-defined]
            assert torch.equal(mine.keys, theirs.keys) and torch.equal(mine.values, theirs.values)
    assert sorted(results) == [0, 1, 2, 3]


def test_client_leaving_mid_stream_stops_the_prefill(
    tiny_lm, prefill_server, gate, monkeypatch: pytest.MonkeyPatch
) -> None:
    cancelled = threading.Event()
    cancel = pipe.LayerPipe.cancel

    def observed_cancel(self: pipe.LayerPipe) -> None:
        cancel(self)
        cancelled.set()

    monkeypatch.setattr(pipe.LayerPipe, "cancel", observed_cancel)
    gate.hold_after = 0  # the prefill waits after layer 0 until the worker saw the client leave
    stub = kv_pb2_grpc.PrefillWorkerStub(grpc.insecure_channel(f"127.0.0.1:{prefill_server.port}"))
    call = stub.Prefill(kv_pb2.PrefillRequest(protocol_version=PROTOCOL_VERSION, token_ids=prompt(20)))
    for frame in call:
        if frame.WhichOneof("kind") == "layer":
            break  # layer 0 arrived: leave
    call.cancel()
    assert cancelled.wait(HANG_GUARD_S), "the worker never noticed the client left"
    gate.release.set()
    assert gate.aborted.wait(HANG_GUARD_S), "the prefill kept running after the client left"
    assert gate.layers_done < tiny_lm.num_layers
    assert wait_until(lambda: gc.collect() >= 0 and all(ref() is None for ref in gate.tensors))
    gate.hold_after = None
    with PrefillClient(f"127.0.0.1:{prefill_server.port}", tiny_lm) as client:
        assert client.prefill(prompt(20), GREEDY).trailer.first_token >= 0
        client.health()
    assert prefill_server.servicer.pending == 0  # nothing left queued


def test_a_full_queue_refuses_with_the_limit(tiny_lm, gate) -> None:
    gate.hold_after = 0  # the first prefill stays running until the second was refused
    running = start_server(tiny_lm, PrefillServerConfig(host="127.0.0.1", port=0, max_queue=1))
    try:
        with PrefillClient(f"127.0.0.1:{running.port}", tiny_lm) as client:
            first = threading.Thread(target=client.prefill, args=(prompt(10), GREEDY))
            first.start()
            assert gate.started.wait(HANG_GUARD_S)
            with pytest.raises(KVProtocolError, match="limit 1") as caught:
                client.prefill(prompt(10), GREEDY)
            assert caught.value.reason is Reason.REJECTED
            gate.release.set()
            first.join()
    finally:
        running.stop(grace_s=0)


@pytest.mark.parametrize(
    ("token_ids", "message"),
    [
        ([], "empty"),
        ([5, 100_000], "token id 100000 outside the vocabulary"),
        (list(range(8, 600)), "exceed"),
    ],
)
def test_bad_prompts_are_refused_with_the_value(tiny_lm, prefill_server, token_ids, message) -> None:
    with PrefillClient(f"127.0.0.1:{prefill_server.port}", tiny_lm) as client:
        with pytest.raises(KVProtocolError, match=message) as caught:
            client.prefill(token_ids, GREEDY)
        assert caught.value.reason is Reason.REJECTED
        assert client.prefill(prompt(5), GREEDY).first_token >= 0  # and the worker serves the next one


def test_a_decode_worker_with_another_model_is_refused_before_any_compute(prefill_server) -> None:
    stub = kv_pb2_grpc.PrefillWorkerStub(grpc.insecure_channel(f"127.0.0.1:{prefill_server.port}"))
    request = kv_pb2.PrefillRequest(
        protocol_version=PROTOCOL_VERSION, token_ids=[1, 2], expected_fingerprint="00" * 16
    )
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.Prefill(request))
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "model identity " + "00" * 16 in caught.value.details()


def test_info_describes_the_served_model(tiny_lm, prefill_server) -> None:
    with PrefillClient(f"127.0.0.1:{prefill_server.port}", tiny_lm) as client:
        info = client.info()
    assert (info.fingerprint, info.num_layers, info.dtype) == (
        tiny_lm.fingerprint,
        tiny_lm.num_layers,
        "float32",
    )


def test_standard_grpc_health_reports_serving_then_not_serving_on_shutdown(tiny_lm) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from hybrid_workers.prefill.servicer import SERVICE_NAME

    running = start_server(tiny_lm, PrefillServerConfig(host="127.0.0.1", port=0))
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        serving = health_pb2.HealthCheckResponse.SERVING
        for name in ("", SERVICE_NAME):
            assert stub.Check(health_pb2.HealthCheckRequest(service=name)).status == serving
        with pytest.raises(grpc.RpcError) as unknown:
            stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        running.health.enter_graceful_shutdown()
        reply = stub.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
    running.stop(grace_s=0)


def test_a_decode_worker_in_another_dtype_gets_a_dtype_error(tiny_lm_bf16, prefill_server) -> None:
    with PrefillClient(f"127.0.0.1:{prefill_server.port}", tiny_lm_bf16) as client:
        with pytest.raises(KVProtocolError, match="same --dtype") as caught:
            client.prefill(prompt(8), GREEDY)
        assert caught.value.reason is Reason.DTYPE
        verdict = client.handshake()  # the handshake says so before any request
        assert verdict.problem is not None and verdict.problem.reason is Reason.DTYPE


def test_metrics_are_labelled_with_the_served_model_name(tiny_lm) -> None:
    from hybrid_workers.metrics import sample_value
    from prometheus_client import REGISTRY

    config = PrefillServerConfig(host="127.0.0.1", port=0, served_model_name="shared-served-name")
    running = start_server(tiny_lm, config)
    try:
        with PrefillClient(f"127.0.0.1:{running.port}", tiny_lm, timeout_s=30) as client:
            client.prefill(prompt(12), GREEDY)
    finally:
        running.stop(grace_s=0)
    labels = {"model": "shared-served-name"}
    assert sample_value("hybrid_inference_prefill_tokens_total", labels) > 0
    assert sample_value("hybrid_inference_prefill_queue_seconds_count", labels) == 1
    build = [
        sample.labels
        for family in REGISTRY.collect()
        for sample in family.samples
        if sample.name == "hybrid_inference_build_info" and sample.labels["model"] == "shared-served-name"
    ]
    assert build and build[0]["role"] == "prefill"
