"""One supervised decode worker: started, probed for /ready, restarted with backoff, stopped.

The process stays in the agent's process group, so launchd (or a test) stopping the agent's group
stops its workers too; `stop` ends it with SIGTERM (the worker drains), then SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

import aiohttp
from hybrid_operator.agent_contract import WorkerPhase, WorkerReport

from hybrid_workers.agent.assignment import Assignment

logger = logging.getLogger("hybrid_inference.agent")
STOP_GRACE_S = 15.0  # the decode worker gives open streams 5 s, then exits
HEALTHY_RUN_S = 60.0  # a worker up this long resets the backoff
PROBE_PERIOD_S = 1.0


class Worker:
    """The decode worker of one assignment; `report()` is what the Lease says about it."""

    def __init__(
        self,
        assignment: Assignment,
        argv: Sequence[str],
        env: dict[str, str],
        probe_host: str,
        max_backoff_s: float,
        changed: Callable[[], None],
    ) -> None:
        self.assignment = assignment
        self._argv, self._env = list(argv), env
        self._ready_url = f"http://{probe_host}:{assignment.port}/ready"
        self._max_backoff = max_backoff_s
        self._changed = changed
        self._process: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._phase, self._reason, self._message = WorkerPhase.STARTING, "", ""
        self.restarts = 0

    def report(self) -> WorkerReport:
        """The Lease's entry for this worker."""
        pid = self._process.pid if self._process and self._process.returncode is None else 0
        return WorkerReport(
            self._phase,
            self.assignment.port,
            self.assignment.digest,
            pid,
            self.restarts,
            self._reason,
            self._message,
        )

    def start(self) -> None:
        """Start supervising (returns at once)."""
        self._task = asyncio.create_task(self._supervise(), name=f"worker {self.assignment.owner}")

    def _set(self, phase: WorkerPhase, reason: str = "", message: str = "") -> None:
        if (phase, reason, message) != (self._phase, self._reason, self._message):
            self._phase, self._reason, self._message = phase, reason, message
            self._changed()

    async def _supervise(self) -> None:
        backoff = 1.0
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while True:
                self._set(WorkerPhase.STARTING, "WorkerStarting", "loading the model")
                self._process = await asyncio.create_subprocess_exec(*self._argv, env=self._env)
                logger.info("%s: decode worker pid %d started", self.assignment.owner, self._process.pid)
                started = time.monotonic()
                probe = asyncio.create_task(self._probe(http))
                try:
                    status = await self._process.wait()
                finally:
                    probe.cancel()
                if time.monotonic() - started > HEALTHY_RUN_S:
                    backoff = 1.0
                self.restarts += 1
                message = f"exit status {status}; restart {self.restarts} in {backoff:.0f} s"
                logger.warning("%s: decode worker %s", self.assignment.owner, message)
                self._set(WorkerPhase.RESTARTING, "WorkerExited", message)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)

    async def _probe(self, http: aiohttp.ClientSession) -> None:
        while True:
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with http.get(self._ready_url) as response:
                    if response.status == 200:
                        self._set(WorkerPhase.READY)
                    elif self._phase == WorkerPhase.READY:
                        self._set(WorkerPhase.STARTING, "NotReady", f"/ready answered {response.status}")
            await asyncio.sleep(PROBE_PERIOD_S)

    async def stop(self) -> None:
        """Stop supervising and end the process (SIGTERM, then SIGKILL after STOP_GRACE_S)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        process = self._process
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), STOP_GRACE_S)
        except TimeoutError:
            process.kill()
            await process.wait()
        logger.info("%s: decode worker pid %d stopped", self.assignment.owner, process.pid)
