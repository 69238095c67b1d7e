"""Leader election on a coordination.k8s.io Lease: one operator replica reconciles, the others stand by.

Why a Lease and not kopf's peering: peering is a pause switch, not an election. Peers of equal priority
all pause ("all operators issue a warning and freeze", kopf/_core/engines/peering.py), and the replicas
of one Deployment share one pod template, hence one priority; peering also needs kopf's own
(Cluster)KopfPeering CRDs. A Lease is the Kubernetes primitive for this (client-go's leaderelection, the
controller-manager's): built in, namespaced, and ours needs three verbs on one object.

The record's expiry is judged on this process's monotonic clock, never by comparing `renewTime` with
our wall clock (clock skew between nodes): a Lease whose record has not changed for its
`leaseDurationSeconds` since we first saw it is expired. Every write carries the `resourceVersion` we
read, so of two replicas claiming at once the API server lets exactly one through (409 for the other).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from hybrid_operator import metrics
from hybrid_operator.kube import KubeClient, KubeError

logger = logging.getLogger(__name__)
API_VERSION = "coordination.k8s.io/v1"
TRANSIENT = (KubeError, aiohttp.ClientError, TimeoutError)


@dataclass(frozen=True)
class ElectionConfig:
    """Where the Lease is, who we are, and client-go's three timings (defaults 15 s / 10 s / 2 s)."""

    namespace: str
    identity: str
    name: str = "hybrid-inference-operator"
    lease_duration_s: int = 15  # a standby takes over once the record is this old
    renew_deadline_s: int = 10  # the leader gives up once it could not renew for this long
    retry_period_s: int = 2  # period of claims (standby) and renewals (leader)

    def __post_init__(self) -> None:
        if not 1 <= self.retry_period_s < self.renew_deadline_s < self.lease_duration_s:
            raise ValueError(
                f"--retry-period-seconds {self.retry_period_s}, --renew-deadline-seconds "
                f"{self.renew_deadline_s}, --lease-duration-seconds {self.lease_duration_s}: need "
                "1 ≤ retry period < renew deadline < lease duration (e.g. 2, 10, 15)"
            )


def micro_time(now: datetime.datetime) -> str:
    """A metav1.MicroTime: `2026-12-03T12:00:00.000000Z`."""
    return now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Elector:
    """Claims, renews and releases one Lease; `leading` says whether this process may reconcile."""

    def __init__(
        self, kube: KubeClient, config: ElectionConfig, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.kube, self.config, self._clock = kube, config, clock
        self.leading = False
        self.holder: str | None = None  # the holder in the record we saw last
        self.lost = asyncio.Event()  # set once leadership is lost (never set by release)
        self._record: tuple[Any, ...] | None = None
        self._record_seen_at = 0.0

    def _observe(self, lease: dict[str, Any]) -> None:
        spec = lease.get("spec", {})
        self.holder = spec.get("holderIdentity") or None
        record = (self.holder, spec.get("renewTime"), lease["metadata"].get("resourceVersion"))
        if record != self._record:
            self._record, self._record_seen_at = record, self._clock()

    def _expired(self, lease: dict[str, Any]) -> bool:
        duration = int(lease.get("spec", {}).get("leaseDurationSeconds") or self.config.lease_duration_s)
        return self._clock() - self._record_seen_at >= duration

    def _spec(self, previous: dict[str, Any] | None) -> dict[str, Any]:
        now = micro_time(datetime.datetime.now(datetime.UTC))
        spec = {
            "holderIdentity": self.config.identity,
            "leaseDurationSeconds": self.config.lease_duration_s,
            "renewTime": now,
        }
        if previous is None or previous.get("holderIdentity") != self.config.identity:
            transitions = int((previous or {}).get("leaseTransitions") or 0)
            spec |= {"acquireTime": now, "leaseTransitions": transitions + (previous is not None)}
        return spec

    async def try_acquire_or_renew(self) -> bool:
        """One claim (or renewal): True when we hold the Lease now."""
        cfg = self.config
        kube = self.kube
        lease = await kube.get(API_VERSION, "Lease", cfg.namespace, cfg.name)
        try:
            if lease is None:
                body = {
                    "apiVersion": API_VERSION,
                    "kind": "Lease",
                    "metadata": {"name": cfg.name, "namespace": cfg.namespace},
                    "spec": self._spec(None),
                }
                lease = await kube.create(API_VERSION, "Lease", cfg.namespace, body)
            else:
                self._observe(lease)
                if self.holder not in (None, cfg.identity) and not self._expired(lease):
                    return False
                version = lease["metadata"].get("resourceVersion")
                patch = {"metadata": {"resourceVersion": version}, "spec": self._spec(lease.get("spec"))}
                lease = await kube.merge_patch(API_VERSION, "Lease", cfg.namespace, cfg.name, patch)
        except KubeError as exc:
            if exc.status == 409:  # another replica wrote first (create or resourceVersion race)
                return False
            raise
        self._observe(lease)
        return self.holder == cfg.identity

    def _jittered(self) -> float:
        return self.config.retry_period_s * random.uniform(1.0, 1.2)

    async def acquire(self) -> None:
        """Claim until we hold the Lease (a standby waits here); API errors are logged and retried."""
        cfg = self.config
        logger.info("leader election: %s claims Lease %s/%s", cfg.identity, cfg.namespace, cfg.name)
        while True:
            try:
                if await asyncio.wait_for(self.try_acquire_or_renew(), cfg.renew_deadline_s):
                    break
                logger.debug("standing by: Lease %s/%s is held by %s", cfg.namespace, cfg.name, self.holder)
            except TRANSIENT as exc:
                logger.warning("leader election: claim failed (%r); retrying", exc)
            await asyncio.sleep(self._jittered())
        self.leading = True
        metrics.LEADER.set(1)
        logger.info("leader election: %s leads (Lease %s/%s)", cfg.identity, cfg.namespace, cfg.name)

    async def hold(self, on_lost: Callable[[], None]) -> None:
        """Renew every retry period while leading; on loss (another holder, or no renewal within the
        renew deadline) stop leading, set `lost` and call `on_lost`."""
        cfg = self.config
        renewed_at = self._clock()
        while self.leading:
            await asyncio.sleep(cfg.retry_period_s)
            try:  # a hung request must not outlast the deadline (the session's own timeout is 30 s)
                remaining = max(0.1, cfg.renew_deadline_s - (self._clock() - renewed_at))
                if await asyncio.wait_for(self.try_acquire_or_renew(), remaining):
                    renewed_at = self._clock()
                    continue
            except TRANSIENT as exc:
                logger.warning("leader election: renewal failed (%r)", exc)
            taken = self.holder not in (None, cfg.identity)
            if taken or self._clock() - renewed_at >= cfg.renew_deadline_s:
                break
        if not self.leading:
            return  # released meanwhile (shutdown)
        self.leading = False
        metrics.LEADER.set(0)
        self.lost.set()
        logger.error(
            "leader election: lost Lease %s/%s (holder now %s): stopped reconciling",
            cfg.namespace,
            cfg.name,
            self.holder,
        )
        on_lost()

    async def release(self) -> None:
        """Give the Lease up on a clean shutdown, so a standby takes over at once (not after expiry)."""
        if not self.leading:
            return
        self.leading = False
        metrics.LEADER.set(0)
        cfg = self.config
        try:
            lease = await self.kube.get(API_VERSION, "Lease", cfg.namespace, cfg.name)
            if lease is None or lease.get("spec", {}).get("holderIdentity") != cfg.identity:
                return
            now = micro_time(datetime.datetime.now(datetime.UTC))
            patch = {
                "metadata": {"resourceVersion": lease["metadata"].get("resourceVersion")},
                "spec": {"holderIdentity": None, "leaseDurationSeconds": 1, "renewTime": now},
            }
            await self.kube.merge_patch(API_VERSION, "Lease", cfg.namespace, cfg.name, patch)
            logger.info("leader election: released Lease %s/%s", cfg.namespace, cfg.name)
        except TRANSIENT as exc:
            logger.warning("leader election: could not release the Lease (%s); it expires instead", exc)
