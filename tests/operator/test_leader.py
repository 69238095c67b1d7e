"""The Lease election (leader.py) against the emulated API server: claims, races, expiry, release.

Expiry is judged on the elector's own clock, injected here, so no test waits for time to pass.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import kopf
import pytest
from emulated_cluster import EmulatedCluster
from hybrid_operator.kube import KubeClient
from hybrid_operator.leader import ElectionConfig, Elector

pytestmark = pytest.mark.operator
LEASE = "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/hybrid-inference-operator"


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def cluster() -> Iterator[EmulatedCluster]:
    emulated = EmulatedCluster().start()
    yield emulated
    emulated.stop()


def elector(cluster: EmulatedCluster, identity: str, namespace: str, clock: Clock) -> Elector:
    info = kopf.ConnectionInfo(server=cluster.url, token=identity)
    client = KubeClient(info, "test", relogin=lambda: info)
    config = ElectionConfig(namespace=namespace, identity=identity, lease_duration_s=15)
    return Elector(client, config, clock=clock)


async def close(*electors: Elector) -> None:
    for each in electors:
        await each.kube.close()


async def test_of_two_replicas_claiming_a_new_lease_at_once_exactly_one_wins(
    cluster: EmulatedCluster,
) -> None:
    clock = Clock()
    a, b = elector(cluster, "a", "race-new", clock), elector(cluster, "b", "race-new", clock)
    results = await asyncio.gather(a.try_acquire_or_renew(), b.try_acquire_or_renew())
    assert sorted(results) == [False, True]
    winner = "a" if results[0] else "b"
    assert cluster.get(LEASE.format(ns="race-new"))["spec"]["holderIdentity"] == winner
    await close(a, b)


async def test_of_two_standbys_claiming_an_expired_lease_at_once_exactly_one_wins(
    cluster: EmulatedCluster,
) -> None:
    clock = Clock()
    old, a, b = (elector(cluster, name, "race-expired", clock) for name in ("old", "a", "b"))
    assert await old.try_acquire_or_renew()
    assert [await a.try_acquire_or_renew(), await b.try_acquire_or_renew()] == [False, False]
    clock.now += 15  # the holder has not renewed for its leaseDurationSeconds, as a and b saw it
    results = await asyncio.gather(a.try_acquire_or_renew(), b.try_acquire_or_renew())
    assert sorted(results) == [False, True]  # the slower claim carried a stale resourceVersion: 409
    lease = cluster.get(LEASE.format(ns="race-expired"))
    assert lease["spec"]["holderIdentity"] == ("a" if results[0] else "b")
    assert lease["spec"]["leaseTransitions"] == 1
    await close(old, a, b)


async def test_a_renewed_lease_is_not_taken_however_long_it_has_been_held(cluster: EmulatedCluster) -> None:
    clock = Clock()
    leader, standby = (
        elector(cluster, "leader", "renewed", clock),
        elector(cluster, "standby", "renewed", clock),
    )
    assert await leader.try_acquire_or_renew()
    assert not await standby.try_acquire_or_renew()
    for _ in range(3):
        clock.now += 14  # just under the lease duration since the standby last saw a change
        assert await leader.try_acquire_or_renew()  # renewal: a new record
        assert not await standby.try_acquire_or_renew()
    assert standby.holder == "leader"
    await close(leader, standby)


async def test_a_released_lease_is_claimed_at_once(cluster: EmulatedCluster) -> None:
    clock = Clock()
    leader, standby = (
        elector(cluster, "leader", "released", clock),
        elector(cluster, "standby", "released", clock),
    )
    await leader.acquire()
    assert not await standby.try_acquire_or_renew()
    await leader.release()
    assert not leader.leading and not leader.lost.is_set()
    assert await standby.try_acquire_or_renew()  # the clock did not move: no expiry needed
    await close(leader, standby)


async def test_a_leader_that_sees_another_holder_stops_leading(cluster: EmulatedCluster) -> None:
    clock = Clock()
    leader = elector(cluster, "leader", "taken", clock)
    leader.config = ElectionConfig(namespace="taken", identity="leader", retry_period_s=1, renew_deadline_s=2)
    await leader.acquire()
    cluster.patch(LEASE.format(ns="taken"), {"spec": {"holderIdentity": "other"}})
    lost: list[str] = []
    await asyncio.wait_for(leader.hold(on_lost=lambda: lost.append("lost")), timeout=60)
    assert (lost, leader.leading, leader.lost.is_set(), leader.holder) == (["lost"], False, True, "other")
    await close(leader)


async def test_a_leader_whose_renewals_hang_gives_up_within_the_renew_deadline(
    cluster: EmulatedCluster,
) -> None:
    info = kopf.ConnectionInfo(server=cluster.url, token="leader")
    config = ElectionConfig(namespace="hung", identity="leader", retry_period_s=1, renew_deadline_s=2)
    leader = Elector(KubeClient(info, "test", relogin=lambda: info), config)  # the real clock
    await leader.acquire()
    assert cluster.emulator is not None
    cluster.emulator.stalled_leases = True  # renewals are sent and never answered
    lost: list[str] = []
    try:
        # The client's own timeout is 30 s: without the elector's deadline this guard trips first.
        await asyncio.wait_for(leader.hold(on_lost=lambda: lost.append("lost")), timeout=20)
    finally:
        cluster.emulator.stalled_leases = False
    assert (lost, leader.leading, leader.holder) == (["lost"], False, "leader")
    await close(leader)


@pytest.mark.parametrize(("retry", "renew", "lease"), [(2, 10, 10), (0, 1, 2), (5, 4, 15)])
def test_timings_must_leave_room_for_renewal(retry: int, renew: int, lease: int) -> None:
    with pytest.raises(ValueError, match="need 1 ≤ retry period < renew deadline < lease duration"):
        ElectionConfig("ns", "me", retry_period_s=retry, renew_deadline_s=renew, lease_duration_s=lease)
