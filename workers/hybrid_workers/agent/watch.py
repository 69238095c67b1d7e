"""The agent's assignments in one namespace, kept current: list, then watch, then list again.

Only ConfigMaps carrying the agent's label count (filtered here too: RBAC cannot filter by label, and
an emulator may ignore selectors). An API outage keeps the last snapshot: running workers are never
stopped because the API server is unreachable, only because their assignment was deleted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import aiohttp
from hybrid_operator.agent_contract import AGENT_LABEL
from hybrid_operator.kube import KubeClient, KubeError

logger = logging.getLogger("hybrid_inference.agent")
RETRY_S = (1.0, 2.0, 5.0, 10.0)  # waits between attempts while the API server is unreachable


class AssignmentSource:
    """`snapshot`: ConfigMap name -> body for this agent in `namespace`; `changed()` after each update."""

    def __init__(
        self, kube: KubeClient, namespace: str, agent: str, watch_s: int, changed: Callable[[], None]
    ) -> None:
        self.namespace, self.agent = namespace, agent
        self.snapshot: dict[str, dict[str, Any]] = {}
        self._kube, self._watch_s, self._changed = kube, watch_s, changed

    def _mine(self, configmap: dict[str, Any]) -> bool:
        labels = configmap.get("metadata", {}).get("labels") or {}
        return bool(labels.get(AGENT_LABEL) == self.agent)

    async def run(self) -> None:
        """Forever: list, watch until the watch ends, repeat; errors wait and retry (logged once)."""
        failures = 0
        while True:
            try:
                await self._list_and_watch()
                failures = 0
            except (KubeError, aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
                if failures == 0:
                    logger.warning(
                        "namespace %s: API unreachable (%s); workers keep running", self.namespace, exc
                    )
                await asyncio.sleep(RETRY_S[min(failures, len(RETRY_S) - 1)])
                failures += 1

    async def _list_and_watch(self) -> None:
        items = await self._kube.list_all("v1", "ConfigMap", self.namespace)
        self.snapshot = {cm["metadata"]["name"]: cm for cm in items if self._mine(cm)}
        self._changed()
        async for event in self._kube.watch("v1", "ConfigMap", self.namespace, self._watch_s):
            kind, obj = event.get("type"), event.get("object") or {}
            name = obj.get("metadata", {}).get("name")
            if kind == "ERROR" or not name:
                return  # e.g. 410 Gone: list again
            if kind != "DELETED" and self._mine(obj):
                self.snapshot[name] = obj
            else:
                self.snapshot.pop(name, None)
            self._changed()
