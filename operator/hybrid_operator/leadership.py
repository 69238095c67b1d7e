"""How an operator process uses leader election (leader.py): settings, the standby's /healthz, exit on loss.

A standby waits inside kopf's startup handler, so kopf starts nothing (no watches, no writes, no
/healthz: kopf serves that only after startup) until this process leads. Meanwhile the standby serves
its own /healthz on the liveness address (200: it is alive and waiting), so the kubelet's liveness
and readiness probes pass and a RollingUpdate of the operator can proceed. A leader that loses the
Lease stops reconciling at once and stops the process; the Deployment restarts it as a standby.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import uuid
from urllib.parse import urlsplit

import aiohttp.web

from hybrid_operator.config import env_int
from hybrid_operator.leader import ElectionConfig, Elector

logger = logging.getLogger(__name__)
TRUE_WORDS = ("1", "true", "yes", "on")
EXIT_LOST = 3  # `hybrid-inference operator`'s exit status after losing the Lease
# Unique per process, stable within it: a restarted container never mistakes its predecessor's record
# for its own, and a retried startup handler keeps the same identity.
PROCESS_SUFFIX = uuid.uuid4().hex[:8]


def election_from_env() -> ElectionConfig | None:
    """HYBRID_INFERENCE_LEADER_ELECTION[_NAMESPACE], _LEASE_NAME and the timings; None when off.
    Raises ValueError naming the variable when one is bad."""
    if os.environ.get("HYBRID_INFERENCE_LEADER_ELECTION", "").lower() not in TRUE_WORDS:
        return None
    namespace = os.environ.get("HYBRID_INFERENCE_LEADER_ELECTION_NAMESPACE", "")
    if not namespace:
        raise ValueError(
            "HYBRID_INFERENCE_LEADER_ELECTION_NAMESPACE is empty: name the namespace of the Lease "
            "(--leader-election-namespace, normally the operator's own)"
        )
    pod = os.environ.get("POD_NAME") or socket.gethostname()
    return ElectionConfig(
        namespace=namespace,
        identity=f"{pod}_{PROCESS_SUFFIX}",
        name=os.environ.get("HYBRID_INFERENCE_LEASE_NAME") or ElectionConfig.name,
        lease_duration_s=env_int("HYBRID_INFERENCE_LEASE_DURATION_SECONDS", 15, minimum=1),
        renew_deadline_s=env_int("HYBRID_INFERENCE_RENEW_DEADLINE_SECONDS", 10, minimum=1),
        retry_period_s=env_int("HYBRID_INFERENCE_RETRY_PERIOD_SECONDS", 2, minimum=1),
    )


async def serve_standby_health(endpoint: str, elector: Elector) -> aiohttp.web.AppRunner:
    """Serve `endpoint` (kopf's --liveness URL, e.g. http://0.0.0.0:8081/healthz) until the caller
    cleans the returned runner up: 200 and who holds the Lease."""
    url = urlsplit(endpoint)

    async def healthz(_: aiohttp.web.Request) -> aiohttp.web.Response:
        cfg = elector.config
        text = f"standby {cfg.identity}: Lease {cfg.namespace}/{cfg.name} held by {elector.holder}"
        return aiohttp.web.Response(text=text)

    app = aiohttp.web.Application()
    app.router.add_get(url.path or "/", healthz)
    runner = aiohttp.web.AppRunner(app, access_log=None)
    await runner.setup()
    await aiohttp.web.TCPSite(runner, url.hostname or "0.0.0.0", url.port or 80, reuse_address=True).start()
    return runner


async def wait_for_leadership(elector: Elector) -> None:
    """Stand by until `elector` leads, serving /healthz on HYBRID_INFERENCE_LIVENESS meanwhile."""
    endpoint = os.environ.get("HYBRID_INFERENCE_LIVENESS", "")
    runner = await serve_standby_health(endpoint, elector) if endpoint else None
    try:
        await elector.acquire()
    finally:
        if runner is not None:
            await runner.cleanup()  # frees the port for kopf's own /healthz


def stop_operator() -> None:
    """Stop this operator as SIGTERM does (kopf finishes gracefully; the CLI then exits EXIT_LOST).
    kopf handles signals only in the main thread; embedded elsewhere it keeps running, reconciling
    nothing (run_pass checks the elector), until its owner stops it."""
    if threading.current_thread() is threading.main_thread():
        signal.raise_signal(signal.SIGTERM)
    else:
        logger.error("not in the main thread: cannot stop kopf; this process no longer reconciles")
