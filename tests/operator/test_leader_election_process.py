"""Two and more `hybrid-inference operator --leader-election` processes against one emulated API server.

Who did what is read from the API server's request log: each process has its own bearer token, so its
requests are told apart. A standby's only requests are reads and claims of the Lease. The tests run in
order and share the cluster: A leads, B stands by; A stops cleanly, B takes over; B is killed, C takes
over once the Lease expires; C sees another holder and exits.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from emulated_cluster import EmulatedCluster, wait_for
from support.loopback import free_port, http_get

pytestmark = [pytest.mark.operator, pytest.mark.slow]
NS = "elect"
LEASE = f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/hybrid-inference-operator"
LEASES = f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases"
# Short, with room for a busy 2-core machine: a leader gives up when it could not renew for 5 s.
TIMINGS = ("--lease-duration-seconds", "8", "--renew-deadline-seconds", "5", "--retry-period-seconds", "1")


@dataclass
class Operator:
    """One operator process: its name (POD_NAME, the prefix of its Lease identity), token and ports."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    liveness: int
    metrics: int

    def healthz(self) -> str:
        return http_get(f"http://127.0.0.1:{self.liveness}/healthz")

    def leader_gauge(self) -> str:
        lines = http_get(f"http://127.0.0.1:{self.metrics}/metrics").splitlines()
        return next(
            (line.split()[-1] for line in lines if line.startswith("hybrid_inference_operator_leader ")), ""
        )


@pytest.fixture(scope="module")
def operators(cluster: EmulatedCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Start operators on demand (`start(name)`); every one still running is stopped at the end."""
    started: dict[str, Operator] = {}
    folder = tmp_path_factory.mktemp("leader")

    def start(name: str) -> Operator:
        liveness, metrics = free_port(), free_port()
        env = {**os.environ, "POD_NAME": name}
        env["KUBECONFIG"] = str(cluster.write_kubeconfig(folder / f"{name}.config", NS, token=name))
        env.pop("KUBERNETES_SERVICE_HOST", None)
        command = [str(Path(sys.executable).with_name("hybrid-inference")), "operator", "--namespace", NS,
                   "--leader-election", "--liveness", f"http://127.0.0.1:{liveness}/healthz",
                   "--metrics-port", str(metrics), *TIMINGS]  # fmt: skip
        log = folder / f"{name}.log"  # a file, not a pipe: kopf's logging must never block on a full pipe
        with log.open("w") as stream:
            process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stream)
        started[name] = Operator(name, process, log, liveness, metrics)
        return started[name]

    yield {"start": start, "started": started}
    for operator in started.values():
        if operator.process.poll() is None:
            operator.process.kill()
            operator.process.wait(timeout=30)


def holder(cluster: EmulatedCluster) -> str:
    lease = cluster.get(LEASE) or {}
    return str(lease.get("spec", {}).get("holderIdentity") or "")


def create_resource(cluster: EmulatedCluster, name: str) -> dict[str, Any]:
    """A HybridInference `name`; returns its decode Deployment once some operator created it."""
    meta = {"name": name, "namespace": NS, "uid": f"uid-{name}", "generation": 1, "resourceVersion": "1"}
    body = {"apiVersion": "hybridinference.dev/v1alpha1", "kind": "HybridInference", "metadata": meta}
    cluster.create(
        f"/apis/hybridinference.dev/v1alpha1/namespaces/{NS}/hybridinferences", {**body, "spec": {}}
    )
    path = f"/apis/apps/v1/namespaces/{NS}/deployments/{name}-decode"
    decode: dict[str, Any] = wait_for(f"{name}-decode", lambda: cluster.get(path))
    return decode


def only_lease_requests(cluster: EmulatedCluster, name: str) -> list[str]:
    """The requests `name` made that were not about the Lease (a standby makes none)."""
    return [path for path in cluster.paths_requested_with(name) if not path.startswith(LEASES)]


def test_only_the_lease_holder_reconciles_while_a_standby_waits_alive(
    cluster: EmulatedCluster, operators: dict[str, Any]
) -> None:
    a = operators["start"]("op-a")
    wait_for("op-a to hold the Lease", lambda: holder(cluster).startswith("op-a_"))
    b = operators["start"]("op-b")
    assert wait_for("op-b's standby /healthz", lambda: "standby op-b_" in b.healthz())
    polls = len(cluster.paths_requested_with("op-b"))
    create_resource(cluster, "one")
    # op-b kept claiming (it is alive and waiting) while op-a reconciled, and made no other request.
    wait_for("op-b to claim again", lambda: len(cluster.paths_requested_with("op-b")) > polls + 1)
    assert f"/apis/apps/v1/namespaces/{NS}/deployments/one-decode" in cluster.paths_requested_with("op-a")
    assert only_lease_requests(cluster, "op-b") == []
    assert holder(cluster).startswith("op-a_")
    assert (a.leader_gauge(), b.leader_gauge()) == ("1.0", "0.0"), (
        http_get(f"http://127.0.0.1:{a.metrics}/metrics")[-3000:] + a.log.read_text()[-3000:]
    )


def test_a_standby_takes_over_at_once_when_the_leader_stops_cleanly(
    cluster: EmulatedCluster, operators: dict[str, Any]
) -> None:
    a, b = operators["started"]["op-a"], operators["started"]["op-b"]
    a.process.send_signal(signal.SIGTERM)
    assert a.process.wait(timeout=60) == 0, a.log.read_text()[-2000:]
    assert "released Lease" in a.log.read_text()
    wait_for("op-b to hold the Lease", lambda: holder(cluster).startswith("op-b_"))
    create_resource(cluster, "two")
    assert f"/apis/apps/v1/namespaces/{NS}/deployments/two-decode" in cluster.paths_requested_with("op-b")
    assert wait_for("op-b's leader gauge", lambda: b.leader_gauge() == "1.0")
    # The standby's own /healthz gave the port back: kopf's now answers there, with its CRD probe.
    assert wait_for("kopf's /healthz on op-b", lambda: "serving hybridinferences" in b.healthz())


def test_a_standby_takes_over_when_the_leaders_lease_expires(
    cluster: EmulatedCluster, operators: dict[str, Any]
) -> None:
    b = operators["started"]["op-b"]
    c = operators["start"]("op-c")
    assert wait_for("op-c's standby /healthz", lambda: "standby op-c_" in c.healthz())
    b.process.kill()  # no clean shutdown: the Lease is not released, it has to expire
    b.process.wait(timeout=30)
    wait_for("op-c to hold the Lease", lambda: holder(cluster).startswith("op-c_"))
    create_resource(cluster, "three")
    assert f"/apis/apps/v1/namespaces/{NS}/deployments/three-decode" in cluster.paths_requested_with("op-c")
    assert int((cluster.get(LEASE) or {})["spec"]["leaseTransitions"]) == 2


def test_a_standby_stops_at_once_on_sigterm(cluster: EmulatedCluster, operators: dict[str, Any]) -> None:
    d = operators["start"]("op-d")
    assert wait_for("op-d's standby /healthz", lambda: "standby op-d_" in d.healthz())
    d.process.send_signal(signal.SIGTERM)  # e.g. the old pod of a rollout that never led
    assert d.process.wait(timeout=60) == 0, d.log.read_text()[-2000:]
    assert only_lease_requests(cluster, "op-d") == []
    assert holder(cluster).startswith("op-c_")


def test_a_leader_that_sees_another_holder_stops_and_exits_for_a_restart(
    cluster: EmulatedCluster, operators: dict[str, Any]
) -> None:
    c = operators["started"]["op-c"]
    # Another replica took the Lease (e.g. op-c was cut off from the API server past the deadline).
    cluster.patch(LEASE, {"spec": {"holderIdentity": "op-d_elsewhere", "leaseDurationSeconds": 3600}})
    assert c.process.wait(timeout=60) == 3, c.log.read_text()[-2000:]
    log = c.log.read_text()
    assert "lost Lease elect/hybrid-inference-operator (holder now op-d_elsewhere)" in log, log[-3000:]
    assert "lost the leader Lease; exiting" in log
