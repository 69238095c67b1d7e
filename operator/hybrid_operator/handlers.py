"""kopf handlers: each one only finds the object and calls the one reconcile pass (reconcile.py)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import kopf
import prometheus_client

from hybrid_operator import metrics
from hybrid_operator.config import OperatorConfig, configure_kopf
from hybrid_operator.crd_health import API_VERSION as CRD_API_VERSION
from hybrid_operator.crd_health import crd_health
from hybrid_operator.kube import KubeClient, KubeError
from hybrid_operator.leader import Elector
from hybrid_operator.leadership import election_from_env, stop_operator, wait_for_leadership
from hybrid_operator.models import GROUP, PLURAL, VERSION
from hybrid_operator.reconcile import reconcile
from hybrid_operator.render_common import MANAGED_BY

logger = logging.getLogger(__name__)
# Only children this operator created trigger passes. `labels=` on a kopf handler filters client-side
# (kopf still lists and watches every Deployment in scope); config.configure_kopf() therefore also sets
# this selector as kopf's server-side label selector for Deployments (settings.watching.label_selectors).
CHILD_LABELS = {"app.kubernetes.io/name": "hybrid-inference", "app.kubernetes.io/managed-by": MANAGED_BY}


class _State:
    """Per-process state: settings (read at startup), the API client (set at login), one lock per
    object so passes never overlap, and the resync loop."""

    config: OperatorConfig = OperatorConfig()
    client: KubeClient | None = None
    locks: dict[tuple[str, str], asyncio.Lock] = {}  # noqa: RUF012 (process-wide by design)
    resync: asyncio.Task[None] | None = None
    crd_served_at_start: bool | None = None  # discovery right before kopf scans (crd_health.py)
    elector: Elector | None = None  # leader election (None: off, this process always reconciles)
    holding: asyncio.Task[None] | None = None  # the elector's renewal loop
    metrics_ports: set[int] = set()  # noqa: RUF012 (process-wide: an HTTP server per port, once)


async def _crd_served(info: kopf.ConnectionInfo) -> bool:
    client = KubeClient(info, _State.config.field_manager, relogin=lambda: info)
    try:
        return await client.served(CRD_API_VERSION, PLURAL)
    finally:
        await client.close()


@kopf.on.probe(id="crd")
async def crd_probe(**_: Any) -> str:
    """/healthz: 500 (kopf turns the error into it) while this process does not serve the CRD."""
    if _State.crd_served_at_start:
        return crd_health(True, True).message
    served_now = _State.client is not None and await _State.client.served(CRD_API_VERSION, PLURAL)
    raise kopf.PermanentError(crd_health(_State.crd_served_at_start, served_now).message)


def _login_info(settings: kopf.OperatorSettings) -> kopf.ConnectionInfo:
    info = kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(settings=settings)
    if info is None:
        raise kopf.LoginError("no in-cluster service account and no kubeconfig (set KUBECONFIG)")
    return info


@kopf.index(GROUP, VERSION, PLURAL, id="hybridinferences")
def index_by_name(namespace: str | None, name: str, **_: Any) -> dict[tuple[str, str], bool]:
    """Every HybridInference in scope, for the resync loop (an index adds no finalizer)."""
    return {(namespace or "default", name): True}


@kopf.on.startup(id="configure")
async def startup(settings: kopf.OperatorSettings, **kwargs: Any) -> None:
    """Read our settings from the environment, apply kopf's, serve metrics; with leader election, stand
    by here until this process holds the Lease; then check the CRD and start the resync loop."""
    _State.config = OperatorConfig.from_env()
    _State.locks = {}  # asyncio locks belong to one event loop: never reuse a previous run's
    configure_kopf(settings, child_labels=CHILD_LABELS)
    port = _State.config.metrics_port
    if port and port not in _State.metrics_ports:  # a retried startup must not bind it twice
        prometheus_client.start_http_server(port)
        _State.metrics_ports.add(port)
    await _lead(settings)
    _State.crd_served_at_start = await _crd_served(_login_info(settings))
    if not _State.crd_served_at_start:
        logger.warning(crd_health(False, False).message)
    _State.resync = asyncio.create_task(resync_forever(kwargs["hybridinferences"]))


async def _lead(settings: kopf.OperatorSettings) -> None:
    """With leader election on, return once this process holds the Lease and renews it; a retried
    startup that leads already keeps its leadership."""
    election = election_from_env()
    held = _State.elector
    if election is not None and held is not None and held.leading and held.config == election:
        return
    metrics.LEADER.set(0 if election else 1)
    _State.elector = _State.holding = None
    if election is None:
        return
    info = _login_info(settings)
    client = KubeClient(info, _State.config.field_manager, relogin=lambda: _login_info(settings))
    elector = Elector(client, election)
    try:
        await wait_for_leadership(elector)
    except BaseException:
        await client.close()
        raise
    _State.elector = elector
    _State.holding = asyncio.create_task(elector.hold(on_lost=stop_operator))


# Drift repair: a deleted Service or an edited Deployment comes back within one period. Deployment
# changes are noticed sooner by `child_changed`. One loop for the operator, not a kopf timer per
# resource: kopf puts a finalizer on every resource with a timer, and owner references make
# finalizers unnecessary (a resource must stay deletable while the operator is down).
async def resync_forever(index: kopf.Index[Any, Any]) -> None:
    """Every resync_seconds, one pass over each indexed resource; a failed pass is logged."""
    while True:
        await asyncio.sleep(_State.config.resync_seconds)
        for namespace, name in list(index):
            try:
                await run_pass("timer", namespace, name)
            except Exception:
                logger.exception("resync pass of %s/%s failed; the next period retries", namespace, name)


@kopf.on.login(id="login")
def login(settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo:
    """In-cluster service account, else kubeconfig; kube.py shares these credentials with kopf."""
    info = _login_info(settings)
    if _State.client is None:
        _State.client = KubeClient(info, _State.config.field_manager, relogin=lambda: _login_info(settings))
    else:
        _State.client.use(info)
    return info


@kopf.on.cleanup(id="close")
async def cleanup(**_: Any) -> None:
    """Stop the resync loop, release the Lease (a standby takes over at once), close API sessions."""
    if _State.resync is not None:
        _State.resync.cancel()
    if _State.holding is not None:
        _State.holding.cancel()
    if _State.elector is not None:
        await _State.elector.release()
        await _State.elector.kube.close()
    if _State.client is not None:
        await _State.client.close()


def leading() -> bool:
    """Whether this process may reconcile: no election, or it holds the Lease."""
    return _State.elector is None or _State.elector.leading


def lost_leadership() -> bool:
    """Whether this process lost the Lease while leading (the CLI then exits with EXIT_LOST)."""
    return _State.elector is not None and _State.elector.lost.is_set()


def backoff_seconds(retry: int) -> float:
    """Delay before retry number `retry` (0-based) of a pass that hit a temporary API error: 5 s doubling
    up to 5 minutes, so an API outage is not hammered every few seconds."""
    return float(min(5 * 2 ** min(retry, 10), 300))


async def run_pass(trigger: str, namespace: str, name: str, retry: int = 0) -> None:
    """Re-read the object and reconcile it, one pass at a time per object."""
    client = _State.client
    if client is None:
        raise kopf.TemporaryError("not logged in yet", delay=1)
    lock = _State.locks.setdefault((namespace, name), asyncio.Lock())
    async with lock:
        if not leading():
            logger.info("not the leader any more: %s pass of %s/%s skipped", trigger, namespace, name)
            return  # the new leader's resume pass reconciles everything (passes are level-triggered)
        with metrics.observe(trigger) as outcome:
            try:
                body = await client.get_owner(namespace, name)
                if body is None:
                    _State.locks.pop((namespace, name), None)
                    return  # deleted meanwhile; children go with it (owner references)
                # Timer and child passes do not resend a generation the API server rejected.
                retry_rejected = trigger not in ("timer", "child")
                result = await reconcile(client, body, _State.config, retry_rejected=retry_rejected)
            except (KubeError, aiohttp.ClientError, TimeoutError) as exc:
                raise kopf.TemporaryError(str(exc), delay=backoff_seconds(retry)) from exc
            outcome["phase"] = result.status["phase"]


@kopf.on.resume(GROUP, VERSION, PLURAL, id="resume")
@kopf.on.create(GROUP, VERSION, PLURAL, id="create")
@kopf.on.update(GROUP, VERSION, PLURAL, id="update")
async def changed(reason: str, namespace: str | None, name: str, retry: int, **_: Any) -> None:
    """The resource appeared, changed, or the operator restarted: reconcile it."""
    await run_pass(str(reason), namespace or "default", name, retry)


@kopf.on.event("apps", "v1", "deployments", labels=CHILD_LABELS, id="child-deployment")
async def child_changed(meta: kopf.Meta, namespace: str | None, **_: Any) -> None:
    """A child Deployment changed (availability) or vanished: reconcile its owner."""
    owner = meta.get("labels", {}).get("app.kubernetes.io/instance")
    if owner:
        await run_pass("child", namespace or "default", owner)
