"""`hybrid-inference operator` as the chart runs it: its own process, every namespace, metrics, liveness."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from emulated_cluster import EmulatedCluster, wait_for
from support.loopback import free_port, http_get

pytestmark = [pytest.mark.operator, pytest.mark.slow]


def test_operator_command_reconciles_and_serves_metrics_and_liveness(
    cluster: EmulatedCluster, tmp_path: Path
) -> None:
    """`hybrid-inference operator` as the chart runs it by default (every namespace), in its own process."""
    ns, metrics_port, liveness_port = "cli", free_port(), free_port()
    env = {**os.environ, "KUBECONFIG": str(cluster.write_kubeconfig(tmp_path / "config", ns))}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    command = [str(Path(sys.executable).with_name("hybrid-inference")), "operator", "--all-namespaces",
               "--metrics-port", str(metrics_port), "--liveness", f"http://127.0.0.1:{liveness_port}/healthz",
               "--decode-image", "reg/decode:cli"]  # fmt: skip
    log = tmp_path / "operator.log"  # a file, not a pipe: kopf's logging must never block on a full pipe
    with log.open("w") as stream:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stream)
    try:
        meta = {"name": "cli", "namespace": ns, "uid": "uid-cli", "generation": 1, "resourceVersion": "1"}
        body = {
            "apiVersion": "hybridinference.dev/v1alpha1",
            "kind": "HybridInference",
            "metadata": meta,
            "spec": {},
        }
        cluster.create(f"/apis/hybridinference.dev/v1alpha1/namespaces/{ns}/hybridinferences", body)
        decode = wait_for(
            "cli-decode", lambda: cluster.get(f"/apis/apps/v1/namespaces/{ns}/deployments/cli-decode")
        )
        assert decode["spec"]["template"]["spec"]["containers"][0]["image"] == "reg/decode:cli"
        created = 'hybrid_inference_reconcile_total{phase="Pending",trigger="create"}'
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        assert wait_for("reconcile metric of the create pass", lambda: created in http_get(metrics_url))
        assert wait_for("liveness", lambda: http_get(f"http://127.0.0.1:{liveness_port}/healthz"))
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    assert process.returncode == 0, log.read_text()[-2000:]
