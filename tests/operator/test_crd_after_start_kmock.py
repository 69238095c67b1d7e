"""A CRD installed after the operator started: /healthz says so (500) until a restart serves it.

The real kopf operator (KopfRunner) against kmock's emulator, whose discovery lists our resource only
once `install_crd()` declared it, as an API server does once the CRD is applied.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from emulated_cluster import EmulatedCluster, wait_for
from kopf.testing import KopfRunner
from support.loopback import free_port

pytestmark = [pytest.mark.operator, pytest.mark.slow]

NS = "late"
HINF = f"/apis/hybridinference.dev/v1alpha1/namespaces/{NS}/hybridinferences"
SPEC = {"prefill": {"device": "cpu"}, "decode": {"device": "cpu"}}


def health(port: int) -> tuple[int, str]:
    """(status, body) of /healthz; (0, "") while nothing listens yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


@pytest.fixture(scope="module")
def cluster() -> Iterator[EmulatedCluster]:
    emulated = EmulatedCluster(crd_installed=False).start()
    emulated.add_ready_node("n1")
    yield emulated
    emulated.stop()


def operator(cluster: EmulatedCluster, kubeconfig: Path, port: int) -> KopfRunner:
    args = ["run", "-m", "hybrid_operator", "--namespace", NS, "--standalone"]
    return KopfRunner([*args, "--liveness", f"http://127.0.0.1:{port}/healthz"], timeout=60)


def test_healthz_is_unhealthy_until_a_restart_serves_a_late_crd(
    cluster: EmulatedCluster, tmp_path: Path
) -> None:
    kubeconfig = cluster.write_kubeconfig(tmp_path / "config", NS)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KUBECONFIG", str(kubeconfig))
        patch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        port = free_port()
        with operator(cluster, kubeconfig, port) as first:
            code, body = wait_for("an answer on /healthz", lambda: health(port)[0] and health(port))
            assert code == 500, body
            cluster.install_crd()
            cluster.create(HINF, {"apiVersion": "hybridinference.dev/v1alpha1", "kind": "HybridInference",
                                  "metadata": {"name": "late", "namespace": NS, "uid": "u-late",
                                               "generation": 1}, "spec": SPEC})  # fmt: skip
            code, _ = wait_for(
                "/healthz still 500 after the CRD appeared", lambda: health(port)[0] == 500 and health(port)
            )
            # This process never serves it: nothing reconciled the resource.
            assert "status" not in (cluster.get(f"{HINF}/late") or {})
        assert "is not installed: kubectl apply -f crds/hybridinference.yaml" in first.output
        assert "was installed after the operator started" in first.output
        port = free_port()
        with operator(cluster, kubeconfig, port) as restarted:
            status = wait_for(
                "status after the restart", lambda: (cluster.get(f"{HINF}/late") or {}).get("status")
            )
            assert status["phase"] == "Pending"
            code, body = wait_for("healthy /healthz", lambda: health(port)[0] == 200 and health(port))
            assert "serving hybridinferences.hybridinference.dev" in body
    assert restarted.exception is None, restarted.output
