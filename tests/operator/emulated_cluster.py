"""kmock's Kubernetes emulator on 127.0.0.1 in a background thread, plus a kubeconfig pointing at it.

The operator (kopf, in KopfRunner's thread) and the tests (plain HTTP from the test thread) both talk
to it over HTTP, as they would to a real API server; nothing is monkey-patched.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp.web
import kmock
import yaml

CRD_RESOURCE = "hybridinference.dev/v1alpha1/hybridinferences"
LEASES = "/apis/coordination.k8s.io/v1/"
VERBS = {"get", "list", "watch", "create", "patch", "delete"}
# CRDs of optional kinds the operator creates (kmock's bundle has only built-in resources).
OPTIONAL_RESOURCES = {
    "monitoring.coreos.com/v1/servicemonitors": ("ServiceMonitor", "servicemonitor"),
    "cert-manager.io/v1/certificates": ("Certificate", "certificate"),
}


class ApiServerEmulator(kmock.KubernetesEmulator):
    """kmock's emulator plus what a real API server does and kmock does not: `dryRun=All`
    (validate, store nothing: answered with the request's object), validation failures (422 for
    any create/patch of an object named in `invalid`, as the API server answers an invalid child), and
    optimistic concurrency for Leases (every write gets a new `metadata.resourceVersion`; a write that
    carries a stale one is refused with 409 Conflict), which leader election relies on. While
    `stalled_leases` is True, Lease writes hang unanswered (an API server that stopped responding)."""

    invalid: dict[str, str] = {}  # noqa: RUF012 (set per instance in EmulatedCluster._serve)
    _versions = itertools.count(1)
    _lease_lock: asyncio.Lock | None = None
    stalled_leases = False  # set from the test thread

    async def _stall(self) -> None:
        while self.stalled_leases:
            await asyncio.sleep(0.05)

    async def _handle(self, request: Any) -> aiohttp.web.StreamResponse:
        if request.method in ("POST", "PATCH", "PUT") and str(request.url.path).startswith(LEASES):
            await self._stall()
            if self._lease_lock is None:
                self._lease_lock = asyncio.Lock()
            async with self._lease_lock:  # check and write as one step, as etcd does
                return await self._write_lease(request)
        return await self._handle_checked(request)

    async def _write_lease(self, request: Any) -> aiohttp.web.StreamResponse:
        meta = request.data.setdefault("metadata", {})
        if request.method != "POST":
            try:
                stored = self.objects["coordination.k8s.io/v1/leases", request.namespace, request.name]
            except KeyError:
                stored = None
            live = stored is not None and not stored.deleted
            current = stored.get("metadata", {}).get("resourceVersion") if live else None
            if meta.get("resourceVersion") not in (None, current):
                status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 409}
                status.update(
                    reason="Conflict", message=f"resourceVersion {meta['resourceVersion']} is stale"
                )
                return aiohttp.web.json_response(status, status=409)
        meta["resourceVersion"] = str(next(self._versions))
        return await self._handle_checked(request)

    async def _handle_checked(self, request: Any) -> aiohttp.web.StreamResponse:
        if request.method in ("POST", "PATCH", "PUT") and isinstance(request.data, dict):
            name = request.data.get("metadata", {}).get("name") or request.name
            if name in self.invalid:
                status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 422}
                status.update(reason="Invalid", message=self.invalid[name])
                return aiohttp.web.json_response(status, status=422)
            if request.params.get("dryRun") == "All":
                return aiohttp.web.json_response(request.data)
        response: aiohttp.web.StreamResponse = await super()._handle(request)
        return response


class EmulatedCluster:
    """A running kmock KubernetesEmulator with our CRD's resource declared; sync HTTP helpers."""

    def __init__(
        self,
        missing: tuple[str, ...] = (),
        expired_token: str | None = None,
        invalid: dict[str, str] | None = None,
        crd_installed: bool = True,
        port: int | None = None,
        objects: tuple[tuple[str, dict[str, Any]], ...] = (),
    ) -> None:
        """`missing`: resources ("group/version/plural") whose CRD is not installed: every call gets 404.
        `expired_token`: a bearer token the API answers 401 to, as it does once a token has expired.
        `invalid`: child name -> the API server's 422 message for any create or patch of it.
        `crd_installed=False`: our CRD is not served until `install_crd()`.
        `port`: listen there (None: any free port). `objects`: ("group/version/plural", body) stored
        before the first request is served (an API server coming back with its state)."""
        self.url = ""
        self._missing = missing
        self._expired_token = expired_token
        self._invalid = dict(invalid or {})
        self._crd_installed = crd_installed
        self._port, self._objects = port, objects
        self.emulator: ApiServerEmulator | None = None
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with ApiServerEmulator() as emulator, kmock.Server(emulator, port=self._port) as server:
            self.emulator = emulator
            emulator.invalid = self._invalid
            emulator.resources.load_bundled()
            if self._crd_installed:
                self._declare_crd()
            for resource, (kind, singular) in OPTIONAL_RESOURCES.items():
                if resource not in self._missing:
                    emulator.resources[resource] = kmock.ResourceInfo(
                        kind=kind, singular=singular, namespaced=True, verbs=VERBS
                    )
            for resource in self._missing:
                emulator[kmock.resource(resource)] << kmock.KubernetesResourceNotFoundError
            for resource, body in self._objects:
                meta = body["metadata"]
                emulator.objects[resource, meta.get("namespace"), meta["name"]] = body
            if self._expired_token:
                expired = kmock.headers({"Authorization": f"Bearer {self._expired_token}"})
                emulator[expired] << 401 << b'{"kind": "Status", "code": 401, "reason": "Unauthorized"}'
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def _declare_crd(self) -> None:
        assert self.emulator is not None
        self.emulator.resources[CRD_RESOURCE] = kmock.ResourceInfo(
            kind="HybridInference",
            singular="hybridinference",
            namespaced=True,
            shortnames={"hinf"},
            verbs=VERBS,
            subresources={"status"},
        )

    def install_crd(self) -> None:
        """Start serving our CRD's resource, as `kubectl apply -f crds/` does on a running cluster."""
        assert self._loop is not None
        done = threading.Event()
        self._loop.call_soon_threadsafe(lambda: (self._declare_crd(), done.set()))
        done.wait(timeout=10)

    def requests_to(self, path: str) -> list[Any]:
        """Every request the emulator received whose URL path is `path` (kmock records them)."""
        assert self.emulator is not None
        return [r for r in list(self.emulator._requests) if r.url.path == path]

    def paths_requested_with(self, token: str) -> list[str]:
        """URL paths of every request made with bearer `token` (one client's requests), in order."""
        assert self.emulator is not None
        wanted = f"Bearer {token}"
        return [r.url.path for r in list(self.emulator._requests) if _authorization(r.headers) == wanted]

    def start(self) -> EmulatedCluster:
        """Start serving; returns once the URL is known."""
        self._thread.start()
        if not self._ready.wait(timeout=30):
            raise RuntimeError("kmock emulator did not start within 30 s")
        return self

    def stop(self) -> None:
        """Stop serving and join the thread."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)

    def write_kubeconfig(self, path: Path, namespace: str, token: str = "test-token") -> Path:
        """A kubeconfig whose current context is this emulator (`token` auth, plain HTTP)."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kmock", "cluster": {"server": self.url}}],
            "users": [{"name": "test", "user": {"token": token}}],
            "contexts": [
                {"name": "kmock", "context": {"cluster": "kmock", "user": "test", "namespace": namespace}}
            ],
            "current-context": "kmock",
        }
        path.write_text(yaml.safe_dump(config))
        return path

    def request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> Any:
        """One API call; returns the decoded JSON, or None for 404."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=10) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def add_ready_node(self, name: str) -> Any:
        """Create a Ready Node `name` (no labels, no taints)."""
        node = {"metadata": {"name": name}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
        return self.create("/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", **node})

    def create(self, collection: str, body: dict[str, Any]) -> Any:
        """POST `body` to a collection path."""
        return self.request("POST", collection, body)

    def patch(self, path: str, body: dict[str, Any]) -> Any:
        """JSON merge patch of the object at `path`."""
        return self.request("PATCH", path, body, "application/merge-patch+json")

    def get(self, path: str) -> Any:
        """GET an object (None when absent)."""
        return self.request("GET", path)

    def delete(self, path: str) -> Any:
        """DELETE the object at `path`."""
        return self.request("DELETE", path)


def hybrid_inference(namespace: str, name: str, spec: dict[str, Any], generation: int = 1) -> dict[str, Any]:
    """A HybridInference as the API server would store it (it assigns uid, generation, resourceVersion)."""
    meta = {
        "name": name,
        "namespace": namespace,
        "uid": f"uid-{name}",
        "generation": generation,
        "resourceVersion": "1",
    }
    kind = {"apiVersion": "hybridinference.dev/v1alpha1", "kind": "HybridInference"}
    return {**kind, "metadata": meta, "spec": spec}


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 60.0) -> Any:
    """Poll `probe` until it returns something truthy; fail naming `what` and the last value.

    The timeout is a ceiling for a loaded 2-core machine, not a speed requirement."""
    deadline = time.monotonic() + timeout
    value = probe()
    while not value:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last value: {value!r}")
        time.sleep(0.2)
        value = probe()
    return value


def _authorization(headers: Any) -> str | None:
    """The Authorization header, whatever its case in the recorded request."""
    return next((value for key, value in dict(headers).items() if key.lower() == "authorization"), None)
