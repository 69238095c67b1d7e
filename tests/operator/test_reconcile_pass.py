"""One reconcile pass (no kopf) through kube.KubeClient against kmock's emulator: idempotency, drift
repair of any child, Secret checks, events, and a missing ServiceMonitor CRD."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import kopf
import pytest
from emulated_cluster import EmulatedCluster, hybrid_inference
from hybrid_operator.config import OperatorConfig
from hybrid_operator.kube import KubeClient
from hybrid_operator.reconcile import reconcile

pytestmark = pytest.mark.operator

NS = "passes"
HINF = f"/apis/hybridinference.dev/v1alpha1/namespaces/{NS}/hybridinferences"
NODE = {
    "metadata": {"name": "n1", "labels": {"kubernetes.io/os": "linux"}},
    "status": {"conditions": [{"type": "Ready", "status": "True"}]},
}


@pytest.fixture(scope="module")
def cluster() -> Iterator[EmulatedCluster]:
    # The Prometheus Operator is not installed in this cluster: its ServiceMonitor resource is unknown.
    emulated = EmulatedCluster(
        missing=("monitoring.coreos.com/v1/servicemonitors",), expired_token="expired"
    ).start()
    emulated.create("/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", **NODE})
    yield emulated
    emulated.stop()


def create(cluster: EmulatedCluster, name: str, spec: dict[str, Any]) -> None:
    cluster.create(HINF, hybrid_inference(NS, name, spec))


async def run(cluster: EmulatedCluster, kube: KubeClient, name: str) -> Any:
    return await reconcile(kube, cluster.get(f"{HINF}/{name}"), OperatorConfig())


async def test_second_pass_over_an_unchanged_world_changes_nothing(
    cluster: EmulatedCluster, client: KubeClient
) -> None:
    create(cluster, "idem", {})
    first = await run(cluster, client, "idem")
    assert sorted(first.changes) == sorted([
        "created NetworkPolicy idem-prefill", "created Service idem-prefill", "created Service idem-kv",
        "created Service idem-api",
        "created Deployment idem-prefill", "created Deployment idem-decode",
    ])  # fmt: skip
    second = await run(cluster, client, "idem")
    assert second.changes == ()
    assert second.status == cluster.get(f"{HINF}/idem")["status"]


async def test_a_deleted_service_and_an_edited_deployment_are_repaired(
    cluster: EmulatedCluster, client: KubeClient
) -> None:
    create(cluster, "drift", {})
    await run(cluster, client, "drift")
    cluster.delete(f"/api/v1/namespaces/{NS}/services/drift-api")
    cluster.patch(f"/apis/apps/v1/namespaces/{NS}/deployments/drift-decode", {"spec": {"replicas": 5}})
    repaired = await run(cluster, client, "drift")
    assert sorted(repaired.changes) == ["created Service drift-api", "updated Deployment drift-decode"]
    assert cluster.get(f"/apis/apps/v1/namespaces/{NS}/deployments/drift-decode")["spec"]["replicas"] == 1


async def test_tls_secret_must_exist_with_all_three_keys(
    cluster: EmulatedCluster, client: KubeClient
) -> None:
    create(cluster, "tls", {"kvTransfer": {"tls": {"enabled": True, "secretName": "kv-tls"}}})
    missing = await run(cluster, client, "tls")
    invalid = next(c for c in missing.status["conditions"] if c["type"] == "InvalidSpec")
    assert (invalid["reason"], missing.changes) == ("TLSSecretMissing", ())
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "kv-tls", "namespace": NS},
              "data": {"tls.crt": "eA==", "tls.key": "eA=="}}  # fmt: skip
    cluster.create(f"/api/v1/namespaces/{NS}/secrets", secret)
    incomplete = await run(cluster, client, "tls")
    invalid = next(c for c in incomplete.status["conditions"] if c["type"] == "InvalidSpec")
    assert invalid["reason"] == "TLSSecretIncomplete" and "ca.crt" in invalid["message"]
    cluster.patch(f"/api/v1/namespaces/{NS}/secrets/kv-tls", {"data": {"ca.crt": "eA=="}})
    fixed = await run(cluster, client, "tls")
    assert fixed.status["phase"] == "Pending" and len(fixed.changes) == 6


async def test_events_record_changes_and_phase(cluster: EmulatedCluster, client: KubeClient) -> None:
    create(cluster, "events", {})
    await run(cluster, client, "events")
    events = cluster.get(f"/api/v1/namespaces/{NS}/events")["items"]
    mine = [e for e in events if e["involvedObject"]["name"] == "events"]
    assert sorted(e["reason"] for e in mine) == ["Applied", "Pending"]
    applied = next(e for e in mine if e["reason"] == "Applied")
    assert "created Deployment events-prefill" in applied["message"]
    assert applied["involvedObject"]["uid"] == "uid-events"


async def test_missing_servicemonitor_crd_skips_only_the_servicemonitor(
    cluster: EmulatedCluster, client: KubeClient
) -> None:
    create(cluster, "monitored", {"metrics": {"serviceMonitor": True}})
    outcome = await run(cluster, client, "monitored")
    assert len(outcome.changes) == 6 and not any("ServiceMonitor" in c for c in outcome.changes)
    assert outcome.status["phase"] == "Pending"


async def test_removing_a_field_from_the_spec_reapplies_once(
    cluster: EmulatedCluster, client: KubeClient
) -> None:
    create(cluster, "removal", {"decode": {"nodeSelector": {"kubernetes.io/os": "linux"}}})
    await run(cluster, client, "removal")
    cluster.patch(f"{HINF}/removal", {"spec": {"decode": {"nodeSelector": None}}})
    assert (await run(cluster, client, "removal")).changes == ("updated Deployment removal-decode",)
    assert (await run(cluster, client, "removal")).changes == ()


async def test_an_object_being_deleted_gets_no_children(cluster: EmulatedCluster, client: KubeClient) -> None:
    create(cluster, "leaving", {})
    cluster.patch(
        f"{HINF}/leaving",
        {"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z", "finalizers": ["foregroundDeletion"]}},
    )
    assert (await run(cluster, client, "leaving")).changes == ()
    assert cluster.get(f"/apis/apps/v1/namespaces/{NS}/deployments/leaving-decode") is None


async def test_an_invalid_spec_removes_stale_placement_from_status(
    cluster: EmulatedCluster, client: KubeClient
) -> None:
    create(cluster, "stale", {})
    assert "placement" in (await run(cluster, client, "stale")).status
    # A spec change (the API server bumps generation; kmock does not, so the test does).
    change = {"metadata": {"generation": 2}, "spec": {"decode": {"nodeSelector": {"zone": "nowhere"}}}}
    cluster.patch(f"{HINF}/stale", change)
    await run(cluster, client, "stale")
    status = cluster.get(f"{HINF}/stale")["status"]
    assert status["phase"] == "Invalid"
    assert "placement" not in status and "endpoints" not in status


async def test_an_expired_token_is_replaced_by_logging_in_again(cluster: EmulatedCluster) -> None:
    logins = []

    def relogin() -> kopf.ConnectionInfo:
        logins.append("again")
        return kopf.ConnectionInfo(server=cluster.url, token="fresh")

    kube = KubeClient(kopf.ConnectionInfo(server=cluster.url, token="expired"), "test", relogin=relogin)
    try:
        nodes = await kube.list_nodes()
    finally:
        await kube.close()
    assert [n["metadata"]["name"] for n in nodes or []] == ["n1"]
    assert logins == ["again"]
