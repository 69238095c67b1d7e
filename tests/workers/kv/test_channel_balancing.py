"""The decode worker's channel options spread calls over every address of its target (round_robin).

The operator points decode pods at a headless Service, whose DNS name resolves to one address per
ready prefill pod; here an `ipv4:` target with two real gRPC servers stands in for that name."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from hybrid_workers.kv.keepalive import CHANNEL_OPTIONS


class CountingHealth(health.HealthServicer):
    """A grpc.health.v1 servicer that counts the Check calls it answered."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        self.calls += 1
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


@pytest.fixture
def two_servers() -> Iterator[tuple[str, list[CountingHealth]]]:
    servers, servicers, addresses = [], [], []
    for _ in range(2):
        servicer = CountingHealth()
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        servicers.append(servicer)
        addresses.append(f"127.0.0.1:{port}")
    yield "ipv4:" + ",".join(addresses), servicers
    for server in servers:
        server.stop(grace=None)


def test_calls_reach_every_address_of_the_target(two_servers: tuple[str, list[CountingHealth]]) -> None:
    target, servicers = two_servers
    with grpc.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for _ in range(20):
            stub.Check(health_pb2.HealthCheckRequest(), timeout=10, wait_for_ready=True)
    # round_robin alternates once both subchannels are connected; pick_first would give [20, 0].
    calls = [s.calls for s in servicers]
    assert sum(calls) == 20 and min(calls) >= 5, calls
