"""The only module that talks to the Kubernetes API: a small aiohttp client on kopf's login credentials.

Every call goes through `KubeClient._call`, which refuses any (group, resource, verb) missing from
PERMISSIONS; the chart's RBAC is checked against that same table and against what the code uses
(tests/operator/test_rbac_least_privilege.py), so the operator never needs a permission the chart does
not grant, nor is granted one it never uses.
"""

from __future__ import annotations

import datetime
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import kopf

from hybrid_operator.drift import needs_apply, stamped
from hybrid_operator.models import GROUP, VERSION
from hybrid_operator.rbac import KINDS, PERMISSIONS, Permission, allowed

logger = logging.getLogger(__name__)


class KubeError(Exception):
    """The API answered with an error status; `status` is the HTTP code."""

    def __init__(self, status: int, method: str, path: str, message: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {message}")
        self.status = status
        self.detail = status_message(message)


def status_message(text: str) -> str:
    """The `message` of a metav1.Status response body, else the body itself (shortened)."""
    try:
        body = json.loads(text)
    except ValueError:
        return text[:500]
    return str(body.get("message") or text)[:500] if isinstance(body, dict) else text[:500]


@dataclass(frozen=True)
class ApplyResult:
    """What `apply` did (created, updated, unchanged) and the object as the API holds it now."""

    action: str
    obj: dict[str, Any]


def object_path(api_version: str, kind: str, namespace: str | None, name: str | None = None) -> str:
    """REST path of a collection (name None) or of one object."""
    _, plural = KINDS[(api_version, kind)]
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    where = f"/namespaces/{namespace}" if namespace else ""
    return f"{prefix}{where}/{plural}" + (f"/{name}" if name else "")


class KubeClient:
    """Async Kubernetes client on kopf.ConnectionInfo credentials; one per operator (or agent) process.

    Needs no running kopf: the agent builds the ConnectionInfo from its kubeconfig and passes its own
    `permissions` table (hybrid_workers.agent.permissions)."""

    def __init__(
        self,
        info: kopf.ConnectionInfo,
        field_manager: str,
        relogin: Callable[[], kopf.ConnectionInfo],
        permissions: Sequence[Permission] = PERMISSIONS,
    ):
        self._info = info
        self._field_manager = field_manager
        self._relogin = relogin
        self._permissions = tuple(permissions)
        self._session: aiohttp.ClientSession | None = None
        self._session_info: kopf.ConnectionInfo | None = None

    def use(self, info: kopf.ConnectionInfo) -> None:
        """Switch to new credentials (kopf logged in again); the next request reconnects with them."""
        self._info = info

    async def _open(self) -> aiohttp.ClientSession:
        if self._session is not None and (self._session.closed or self._session_info is not self._info):
            await self._session.close()
            self._session = None
        if self._session is None:
            ssl = self._info.as_ssl_context() if self._info.server.startswith("https") else False
            self._session = aiohttp.ClientSession(
                headers=self._info.as_http_headers(),
                connector=aiohttp.TCPConnector(ssl=ssl),
                timeout=aiohttp.ClientTimeout(total=30),
            )
            self._session_info = self._info
        return self._session

    async def close(self) -> None:
        """Close the HTTP session (on operator shutdown)."""
        if self._session is not None:
            await self._session.close()

    async def _call(self, verb: str, api_version: str, kind: str, method: str, path: str, **kw: Any) -> Any:
        group, plural = KINDS[(api_version, kind)]
        resource = plural + kw.pop("subresource", "")
        if not allowed(group, resource, verb, self._permissions):
            raise PermissionError(f"{verb} {group or 'core'}/{resource} is not in kube.PERMISSIONS")
        for attempt in (1, 2):
            session = await self._open()
            async with session.request(method, self._info.server.rstrip("/") + path, **kw) as response:
                if response.status == 401 and attempt == 1:
                    await self._refresh()  # rotated service-account token: log in again, retry once
                    continue
                if response.status >= 400:
                    raise KubeError(response.status, method, path, await response.text())
                return await response.json()
        raise AssertionError("unreachable")

    async def served(self, api_version: str, plural: str) -> bool:
        """Whether the API server serves `plural` in `api_version` now (discovery; every authenticated
        user may read it through the system:discovery role, so it is not in PERMISSIONS)."""
        session = await self._open()
        url = f"{self._info.server.rstrip('/')}/apis/{api_version}"
        async with session.get(url) as response:
            if response.status == 404:
                return False
            if response.status >= 400:
                raise KubeError(response.status, "GET", f"/apis/{api_version}", await response.text())
            listing = await response.json()
        return any(item.get("name") == plural for item in listing.get("resources", []))

    async def _refresh(self) -> None:
        self.use(self._relogin())

    async def get(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        """One object, or None when it does not exist."""
        try:
            path = object_path(api_version, kind, namespace, name)
            result: dict[str, Any] = await self._call("get", api_version, kind, "GET", path)
            return result
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def current(self, manifest: Mapping[str, Any]) -> dict[str, Any] | None:
        """The live object `manifest` describes, or None."""
        meta = manifest["metadata"]
        return await self.get(manifest["apiVersion"], manifest["kind"], meta.get("namespace"), meta["name"])

    async def apply(
        self, manifest: Mapping[str, Any], dry_run: bool = False, current: Any = ...
    ) -> ApplyResult:
        """Server-side apply `manifest` (stamped with its hash) unless the live object still matches it.

        `dry_run`: the API server validates and admits it (dryRun=All) but stores nothing.
        `current`: the live object when the caller read it already (None: absent)."""
        api_version, kind, meta = manifest["apiVersion"], manifest["kind"], manifest["metadata"]
        if current is ...:
            current = await self.current(manifest)
        if current is not None and not needs_apply(manifest, current):
            return ApplyResult("unchanged", current)
        manifest = stamped(manifest)
        path = object_path(api_version, kind, meta.get("namespace"), meta["name"])
        params = {"fieldManager": self._field_manager, "force": "true"}
        if dry_run:
            params["dryRun"] = "All"
        headers = {"Content-Type": "application/apply-patch+yaml"}  # JSON is YAML
        try:
            obj = await self._call(
                "patch", api_version, kind, "PATCH", path, json=manifest, params=params, headers=headers
            )
        except KubeError as exc:
            if exc.status != 404 or current is not None:
                raise
            # API servers create on apply; emulators without apply-create (kmock) answer 404: create.
            collection = object_path(api_version, kind, meta.get("namespace"))
            obj = await self._call(
                "create", api_version, kind, "POST", collection, json=manifest, params=params
            )
        return ApplyResult("created" if current is None else "updated", obj)

    async def create(
        self, api_version: str, kind: str, namespace: str | None, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """POST a new object (KubeError 409 when one of that name exists); returns it as stored."""
        path = object_path(api_version, kind, namespace)
        result: dict[str, Any] = await self._call("create", api_version, kind, "POST", path, json=dict(body))
        return result

    async def list_all(self, api_version: str, kind: str, namespace: str | None) -> list[dict[str, Any]]:
        """Every object of a kind in a namespace (callers filter by label: emulators may not)."""
        path = object_path(api_version, kind, namespace)
        result = await self._call("list", api_version, kind, "GET", path)
        return list(result.get("items", []))

    async def watch(
        self, api_version: str, kind: str, namespace: str | None, timeout_s: float
    ) -> AsyncIterator[dict[str, Any]]:
        """Watch events ({"type", "object"}) for up to `timeout_s` seconds, then return."""
        group, plural = KINDS[(api_version, kind)]
        if not allowed(group, plural, "watch", self._permissions):
            raise PermissionError(f"watch {group or 'core'}/{plural} is not in kube.PERMISSIONS")
        session = await self._open()
        url = self._info.server.rstrip("/") + object_path(api_version, kind, namespace)
        params = {"watch": "true", "timeoutSeconds": str(int(timeout_s))}
        limit = aiohttp.ClientTimeout(total=timeout_s + 5, sock_read=timeout_s + 5)
        async with session.get(url, params=params, timeout=limit) as response:
            if response.status >= 400:
                raise KubeError(response.status, "GET", url, await response.text())
            try:
                async for line in response.content:
                    if line.strip():
                        yield json.loads(line)
            except TimeoutError:
                return  # a server that ignores timeoutSeconds: our limit ends the watch instead

    async def merge_patch(
        self, api_version: str, kind: str, namespace: str | None, name: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """JSON merge patch of one object; returns it as the API holds it now."""
        path = object_path(api_version, kind, namespace, name)
        headers = {"Content-Type": "application/merge-patch+json"}
        result: dict[str, Any] = await self._call(
            "patch", api_version, kind, "PATCH", path, json=dict(body), headers=headers
        )
        return result

    async def delete_owned(self, api_version: str, kind: str, namespace: str, name: str, uid: str) -> bool:
        """Delete the object if its controller owner reference is `uid` (never a stranger's object of the
        same name); True when it was deleted."""
        current = await self.get(api_version, kind, namespace, name)
        refs = (current or {}).get("metadata", {}).get("ownerReferences", [])
        if not any(ref.get("uid") == uid and ref.get("controller") for ref in refs):
            return False
        path = object_path(api_version, kind, namespace, name)
        try:
            await self._call("delete", api_version, kind, "DELETE", path)
        except KubeError as exc:
            if exc.status != 404:
                raise
        return True

    async def list_nodes(self) -> list[dict[str, Any]] | None:
        """All nodes, or None when the operator may not list them (placement checks are then skipped)."""
        try:
            result = await self._call("list", "v1", "Node", "GET", object_path("v1", "Node", None))
        except KubeError as exc:
            if exc.status == 403:
                logger.warning("not allowed to list nodes: placement checks skipped (%s)", exc)
                return None
            raise
        return list(result.get("items", []))

    async def get_secret_keys(self, namespace: str, name: str) -> set[str] | None:
        """The data keys of a Secret (never its values), or None when it does not exist."""
        secret = await self.get("v1", "Secret", namespace, name)
        return None if secret is None else set(secret.get("data", {})) | set(secret.get("stringData", {}))

    async def get_owner(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A HybridInference by name, or None."""
        return await self.get(f"{GROUP}/{VERSION}", "HybridInference", namespace, name)

    async def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """Merge-patch the status subresource (conditions replace the old list as a whole)."""
        path = object_path(f"{GROUP}/{VERSION}", "HybridInference", namespace, name) + "/status"
        headers = {"Content-Type": "application/merge-patch+json"}
        body = {"status": dict(status)}
        await self._call(
            "patch",
            f"{GROUP}/{VERSION}",
            "HybridInference",
            "PATCH",
            path,
            json=body,
            headers=headers,
            subresource="/status",
        )

    async def post_event(
        self, owner: Mapping[str, Any], reason: str, message: str, warning: bool = False
    ) -> None:
        """A core/v1 Event on `owner`; best effort: a failure is logged, never raised."""
        event = event_body(owner, reason, message, warning, self._field_manager)
        path = object_path("v1", "Event", event["metadata"]["namespace"])
        try:
            await self._call("create", "v1", "Event", "POST", path, json=event)
        except (KubeError, aiohttp.ClientError) as exc:
            logger.warning("could not post event %s on %s: %s", reason, owner["metadata"]["name"], exc)


def event_body(
    owner: Mapping[str, Any], reason: str, message: str, warning: bool, component: str
) -> dict[str, Any]:
    """A core/v1 Event about `owner`, with a unique name (as kubectl's events have)."""
    meta = owner["metadata"]
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    involved = {key: owner[key] for key in ("apiVersion", "kind")}
    involved.update({key: meta.get(key) for key in ("name", "namespace", "uid")})
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:16]}", "namespace": meta.get("namespace")},
        "involvedObject": involved,
        "reason": reason,
        "message": message[:1024],
        "type": "Warning" if warning else "Normal",
        "source": {"component": component},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
