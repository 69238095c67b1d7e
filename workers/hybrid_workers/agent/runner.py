"""The agent's loop: assignments in, supervised workers and Lease heartbeats out, until stopped.

Start-up checks credentials and every Lease once (a wrong or expired kubeconfig is a one-line error);
afterwards API errors never stop a worker. SIGTERM/SIGINT stop the workers and mark the Leases
"stopped", so the operator fails over at once instead of after the lease duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import signal
import socket
from collections.abc import Mapping
from typing import Any

import aiohttp
from hybrid_operator.agent_contract import WorkerPhase, WorkerReport
from hybrid_operator.kube import KubeClient, KubeError

from hybrid_workers.agent import assignment as assign
from hybrid_workers.agent.config import AgentConfig
from hybrid_workers.agent.host import free_memory_bytes
from hybrid_workers.agent.lease import LEASE_API, Identity, lease_patch
from hybrid_workers.agent.watch import AssignmentSource
from hybrid_workers.agent.worker import Worker
from hybrid_workers.enums import ComputeDevice, Engine
from hybrid_workers.errors import UserError

logger = logging.getLogger("hybrid_inference.agent")


def port_free(host: str, port: int) -> bool:
    """Whether a worker could listen on host:port now (another program may hold it)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class Agent:
    """One agent process: its sources (one per namespace), workers by owner, refusals by owner."""

    def __init__(self, config: AgentConfig, kube: KubeClient, identity: Identity) -> None:
        self.config, self.kube, self.identity = config, kube, identity
        self.engine, self.device = Engine(identity.engine), ComputeDevice(identity.device)
        self.workers: dict[str, Worker] = {}
        self.refused: dict[str, WorkerReport] = {}
        self._wake = asyncio.Event()  # assignments changed: reconcile
        self._beat = asyncio.Event()  # a worker changed: renew the Leases now
        self._sources = [
            AssignmentSource(kube, ns, config.name, config.watch_seconds, self._wake.set)
            for ns in config.namespaces
        ]

    async def preflight(self) -> None:
        """Every Lease readable: UserError naming what is wrong (credentials, binding, Lease)."""
        for namespace in self.config.namespaces:
            where = f"Lease {namespace}/{self.config.name}"
            try:
                lease = await self.kube.get(LEASE_API, "Lease", namespace, self.config.name)
            except KubeError as exc:
                raise UserError(_credentials_problem(self.config, namespace, exc.status)) from None
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                raise UserError(
                    f"kubeconfig {self.config.kubeconfig}: API server unreachable ({exc})"
                ) from None
            if lease is None:
                raise UserError(
                    f"{where} not found: create it with the chart (agents: [{{name: {self.config.name}, "
                    f"namespaces: [{namespace}]}}]) or kubectl (docs/nodes.md)"
                )

    def desired(self) -> dict[str, dict[str, Any]]:
        """Assignment ConfigMaps by owner "<ns>/<name>" across namespaces, oldest first."""
        found = [cm for source in self._sources for cm in source.snapshot.values()]
        found.sort(key=lambda cm: (cm["metadata"].get("creationTimestamp", ""), cm["metadata"]["name"]))
        result: dict[str, dict[str, Any]] = {}
        for cm in found:
            meta = cm["metadata"]
            owner = str((cm.get("data") or {}).get("owner", "")).rpartition("/")[2] or meta["name"]
            result.setdefault(f"{meta.get('namespace', 'default')}/{owner}", cm)
        return result

    async def reconcile(self) -> None:
        """Stop workers whose assignment went or changed, then start (or refuse) the wanted ones."""
        wanted = self.desired()
        digests = {owner: assign.assignment_digest(cm.get("data") or {}) for owner, cm in wanted.items()}
        for owner, worker in list(self.workers.items()):
            if digests.get(owner) != worker.assignment.digest:
                await worker.stop()
                del self.workers[owner]
        self.refused = {o: r for o, r in self.refused.items() if digests.get(o) == r.config}
        for owner, configmap in wanted.items():
            if owner not in self.workers:
                self._start(owner, configmap)
        self._beat.set()

    def _start(self, owner: str, configmap: Mapping[str, Any]) -> None:
        try:
            job = assign.parse(configmap)
            assign.check_files(job, self.config.name)
            self._check_port(job)
        except assign.Refusal as refusal:
            digest = assign.assignment_digest(configmap.get("data") or {})
            report = WorkerReport(
                WorkerPhase.REFUSED, config=digest, reason=refusal.reason, message=str(refusal)
            )
            if self.refused.get(owner) != report:
                logger.error("%s: refused: %s: %s", owner, refusal.reason, refusal)
            self.refused[owner] = report
            return
        self.refused.pop(owner, None)
        argv = assign.command(job, self.config.listen_host, self.engine, self.device)
        probe_host = "127.0.0.1" if self.config.listen_host in ("0.0.0.0", "::") else self.config.listen_host
        env = assign.worker_environment(os.environ)
        worker = Worker(job, argv, env, probe_host, self.config.max_backoff_seconds, self._beat.set)
        self.workers[owner] = worker
        worker.start()

    def _check_port(self, job: assign.Assignment) -> None:
        holder = next((o for o, w in self.workers.items() if w.assignment.port == job.port), None)
        if holder is not None:
            raise assign.Refusal(
                "PortInUse",
                f"port {job.port} on agent {self.config.name} already serves {holder}: "
                "give this resource another serving.port",
            )
        if not port_free(self.config.listen_host, job.port):
            raise assign.Refusal(
                "PortBusy",
                f"port {job.port} on agent {self.config.name} is held by another program: "
                "free it or give this resource another serving.port",
            )

    def reports(self, namespace: str) -> dict[str, WorkerReport]:
        """This namespace's workers and refusals, for its Lease."""
        every = {**self.refused, **{o: w.report() for o, w in self.workers.items()}}
        return {o: r for o, r in every.items() if o.startswith(namespace + "/")}

    async def renew(self, state: str = "running") -> None:
        """Renew every Lease once; failures are logged and the next beat retries."""
        now, memory = datetime.datetime.now(datetime.UTC), free_memory_bytes()
        for namespace in self.config.namespaces:
            body = lease_patch(
                self.identity, self.config.lease_seconds, self.reports(namespace), memory, state, now
            )
            try:
                await self.kube.merge_patch(LEASE_API, "Lease", namespace, self.config.name, body)
            except (KubeError, aiohttp.ClientError, OSError, TimeoutError) as exc:
                logger.warning("Lease %s/%s not renewed: %s", namespace, self.config.name, exc)

    async def _heartbeat(self) -> None:
        while True:
            await self.renew()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._beat.wait(), self.config.renew_seconds)
            self._beat.clear()

    async def _reconciler(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.reconcile()

    async def run(self) -> None:
        """Serve until SIGTERM/SIGINT, then stop the workers and mark the Leases stopped."""
        await self.preflight()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        names = ", ".join(self.config.namespaces)
        logger.info("agent %s (%s on %s, %s) serving namespaces %s", self.config.name,
                    self.engine.value, self.device.value, self.identity.address, names)  # fmt: skip
        tasks = [asyncio.create_task(s.run()) for s in self._sources]
        tasks += [asyncio.create_task(self._heartbeat()), asyncio.create_task(self._reconciler())]
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(w.stop() for w in self.workers.values()))
        self.workers.clear()
        await self.renew(state="stopped")
        await self.kube.close()


def _credentials_problem(config: AgentConfig, namespace: str, status: int) -> str:
    where = f"Lease {namespace}/{config.name}"
    if status == 401:
        return (
            f"kubeconfig {config.kubeconfig}: the API server answered 401 Unauthorized (token expired or "
            "wrong): make a new one with `kubectl create token` (docs/nodes.md)"
        )
    if status == 403:
        return (
            f"kubeconfig {config.kubeconfig}: may not read {where} (403): bind the agent's Role in "
            f"namespace {namespace} (chart value agents[].namespaces)"
        )
    return f"kubeconfig {config.kubeconfig}: reading {where} failed with HTTP {status}"
