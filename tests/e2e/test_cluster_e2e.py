"""End to end on a real cluster: helm install, apply the CPU example, wait for Ready, call the API.

Skipped unless HYBRID_E2E_KUBECONTEXT names a kubeconfig context (k3d or kind; see docs/kubernetes.md,
"Running the e2e test"). Needs `kubectl` and `helm` on PATH and the three images loaded into the
cluster (HYBRID_E2E_TAG, default 0.1.0). Leaves nothing behind: the namespaces and release are removed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CONTEXT = os.environ.get("HYBRID_E2E_KUBECONTEXT", "")
TAG = os.environ.get("HYBRID_E2E_TAG", "0.1.0")
SYSTEM_NS, APP_NS, NAME = "hybrid-inference-e2e-system", "hybrid-inference-e2e", "single-node-cpu"

if not CONTEXT:
    pytest.skip(
        "set HYBRID_E2E_KUBECONTEXT to a k3d/kind context to run the e2e test", allow_module_level=True
    )
for tool in ("kubectl", "helm"):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not on PATH", allow_module_level=True)


def kubectl(*args: str, check: bool = True, timeout: float = 120) -> str:
    result = subprocess.run(
        ["kubectl", "--context", CONTEXT, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def helm(*args: str) -> None:
    subprocess.run(["helm", "--kube-context", CONTEXT, *args], check=True, timeout=600)


@pytest.fixture(scope="module")
def installed() -> Iterator[None]:
    values = [
        f"--set=image.tag={TAG}",
        f"--set=workerImages.prefill=hybrid-inference/prefill:{TAG}",
        f"--set=workerImages.decode=hybrid-inference/decode:{TAG}",
        f"--set=watchNamespace={APP_NS}",
    ]
    kubectl("create", "namespace", APP_NS, check=False)
    helm("install", "hinf-e2e", str(ROOT / "charts" / "hybrid-inference"), "--namespace", SYSTEM_NS,
         "--create-namespace", "--wait", "--timeout", "5m", *values)  # fmt: skip
    try:
        yield
    finally:
        kubectl("delete", "namespace", APP_NS, "--wait=true", check=False, timeout=300)
        subprocess.run(
            ["helm", "--kube-context", CONTEXT, "uninstall", "hinf-e2e", "--namespace", SYSTEM_NS],
            check=False,
        )
        kubectl("delete", "namespace", SYSTEM_NS, check=False, timeout=300)


def wait_for_phase(phase: str, timeout: float = 900) -> str:
    deadline, seen = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        seen = kubectl("-n", APP_NS, "get", "hinf", NAME, "-o", "jsonpath={.status.phase}", check=False)
        if seen == phase:
            return seen
        time.sleep(5)
    raise AssertionError(f"{NAME} did not reach {phase} in {timeout:.0f} s (last: {seen!r}):\n"
                         + kubectl("-n", APP_NS, "describe", "hinf", NAME, check=False))  # fmt: skip


@contextlib.contextmanager
def port_forward(service: str, port: int) -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        local = sock.getsockname()[1]
    command = [
        "kubectl",
        "--context",
        CONTEXT,
        "-n",
        APP_NS,
        "port-forward",
        f"service/{service}",
        f"{local}:{port}",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and "Forwarding" in process.stdout.readline()
        yield local
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_cpu_example_becomes_ready_and_serves_completions(installed: None) -> None:
    from openai import OpenAI

    kubectl("-n", APP_NS, "apply", "-f", str(ROOT / "examples" / "single-node-cpu.yaml"))
    wait_for_phase("Ready")
    status = kubectl("-n", APP_NS, "get", "hinf", NAME, "-o", "jsonpath={.status.endpoints.api}")
    assert status == f"http://{NAME}-api.{APP_NS}.svc:8000"
    with port_forward(f"{NAME}-api", 8000) as local:
        client = OpenAI(base_url=f"http://127.0.0.1:{local}/v1", api_key="unused")
        model = client.models.list().data[0].id
        completion = client.completions.create(model=model, prompt="The KV cache travels", max_tokens=8)
    assert completion.usage is not None and 1 <= completion.usage.completion_tokens <= 8
    assert completion.choices[0].text


# What kmock cannot show (docs/kubernetes.md, "Running the e2e test"): the API server's own validation
# (through the operator's dryRun=All), metadata.generation bumps, garbage collection of children, and a
# cordoned node turning the resource Degraded instead of Invalid. A second, small resource that never
# needs its pods to become ready.
PROBE = "e2e-failure-modes"


def apply_probe(spec: str) -> None:
    apply_resource(PROBE, spec)


def apply_resource(name: str, spec: str) -> None:
    manifest = (
        f"apiVersion: hybridinference.dev/v1alpha1\nkind: HybridInference\nmetadata: {{name: {name}}}\n"
        f"spec: {spec}\n"
    )
    subprocess.run(["kubectl", "--context", CONTEXT, "-n", APP_NS, "apply", "-f", "-"], input=manifest,
                   text=True, check=True, capture_output=True, timeout=60)  # fmt: skip


def jsonpath(kind: str, name: str, path: str) -> str:
    return kubectl("-n", APP_NS, "get", kind, name, "-o", f"jsonpath={path}", check=False)


def wait_until(what: str, probe: Callable[[], bool], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out waiting for {what}:\n"
                + kubectl("-n", APP_NS, "describe", "hinf", PROBE, check=False)
            )
        time.sleep(3)


def invalid_reason() -> str:
    return jsonpath("hinf", PROBE, '{.status.conditions[?(@.type=="InvalidSpec")].reason}')


def test_api_server_rejection_generation_garbage_collection_and_a_cordoned_node(installed: None) -> None:
    cpu = "{device: cpu, replicas: 0}"
    # 1. A value only the API server checks (priorityClassName must be a DNS subdomain): the dry run
    #    is rejected, the status says why, and nothing was created.
    bad_template = "{spec: {priorityClassName: Not_Valid}}"
    apply_probe(f"{{prefill: {cpu}, decode: {{device: cpu, replicas: 0, podTemplate: {bad_template}}}}}")
    wait_until("ChildRejected", lambda: invalid_reason() == "ChildRejected")
    assert kubectl("-n", APP_NS, "get", "deploy", f"{PROBE}-prefill", check=False) == ""
    # 2. A valid spec: the children appear; a spec change bumps generation and observedGeneration follows.
    apply_probe(f"{{prefill: {cpu}, decode: {cpu}}}")
    wait_until(
        "children", lambda: jsonpath("deploy", f"{PROBE}-decode", "{.metadata.name}") == f"{PROBE}-decode"
    )
    first = int(jsonpath("hinf", PROBE, "{.metadata.generation}"))
    apply_probe(f"{{prefill: {cpu}, decode: {cpu}, serving: {{maxConcurrency: 3}}}}")
    wait_until(
        "observedGeneration",
        lambda: jsonpath("hinf", PROBE, "{.status.observedGeneration}") == str(first + 1),
    )
    # 3. Cordoning every node: Degraded (NodeUnavailable), not Invalid; uncordoning clears it.
    nodes = kubectl("get", "nodes", "-o", "jsonpath={.items[*].metadata.name}").split()
    try:
        for node in nodes:
            kubectl("cordon", node)
        wait_until(
            "NodeUnavailable",
            lambda: "NodeUnavailable" in jsonpath("hinf", PROBE, "{.status.conditions[*].reason}"),
        )
        assert jsonpath("hinf", PROBE, "{.status.phase}") == "Degraded"
    finally:
        for node in nodes:
            kubectl("uncordon", node, check=False)
    # 4. Deleting the resource deletes its children (owner references, garbage collector).
    kubectl("-n", APP_NS, "delete", "hinf", PROBE, "--wait=true", timeout=180)
    wait_until(
        "children deleted",
        lambda: (
            kubectl(
                "-n",
                APP_NS,
                "get",
                "deploy,svc",
                "-l",
                f"app.kubernetes.io/instance={PROBE}",
                "-o",
                "name",
                check=False,
            )
            == ""
        ),
    )


# Leader election with two operator replicas (docs/kubernetes.md, "Operator replicas and leader
# election"): one Lease holder, whose metrics say it leads and who alone reconciles; deleting its pod
# hands the Lease to the other replica, which then reconciles a new resource.
LEASE = "hinf-e2e-hybrid-inference"
HANDOVER = "e2e-handover"


def operator_pods() -> list[str]:
    selector = "app.kubernetes.io/name=hybrid-inference-operator"
    names = kubectl("-n", SYSTEM_NS, "get", "pods", "-l", selector, "--field-selector=status.phase=Running",
                    "-o", "jsonpath={.items[*].metadata.name}")  # fmt: skip
    return names.split()


def lease_holder() -> str:
    return kubectl(
        "-n", SYSTEM_NS, "get", "lease", LEASE, "-o", "jsonpath={.spec.holderIdentity}", check=False
    )


def pod_metric(pod: str, name: str) -> float:
    """The sum of `name`'s samples on an operator pod, read through the API server's pod proxy."""
    path = f"/api/v1/namespaces/{SYSTEM_NS}/pods/{pod}:8080/proxy/metrics"
    text = kubectl("get", "--raw", path, check=False)  # "" while the pod is not serving yet
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def test_two_operator_replicas_elect_one_leader_that_hands_over(installed: None) -> None:
    chart = str(ROOT / "charts" / "hybrid-inference")
    helm("upgrade", "hinf-e2e", chart, "--namespace", SYSTEM_NS, "--reuse-values", "--set", "replicas=2",
         "--wait", "--timeout", "5m")  # fmt: skip
    try:
        wait_until("two running operator pods", lambda: len(operator_pods()) == 2)
        wait_until("a Lease holder", lambda: lease_holder().split("_")[0] in operator_pods())
        leader = lease_holder().split("_")[0]
        standby = next(pod for pod in operator_pods() if pod != leader)
        wait_until("the leader's gauge", lambda: pod_metric(leader, "hybrid_inference_operator_leader ") == 1)
        assert pod_metric(standby, "hybrid_inference_operator_leader ") == 0
        assert pod_metric(standby, "hybrid_inference_reconcile_total{") == 0  # the standby never reconciled
        kubectl("-n", SYSTEM_NS, "delete", "pod", leader, "--wait=true", timeout=180)
        wait_until("the standby to take the Lease", lambda: lease_holder().startswith(f"{standby}_"))
        apply_resource(HANDOVER, "{prefill: {device: cpu, replicas: 0}, decode: {device: cpu, replicas: 0}}")
        wait_until(
            "the new leader to reconcile",
            lambda: jsonpath("deploy", f"{HANDOVER}-decode", "{.metadata.name}") == f"{HANDOVER}-decode",
        )
        assert pod_metric(standby, "hybrid_inference_operator_leader ") == 1
    finally:
        kubectl("-n", APP_NS, "delete", "hinf", HANDOVER, "--ignore-not-found", check=False, timeout=180)
        helm("upgrade", "hinf-e2e", chart, "--namespace", SYSTEM_NS, "--reuse-values", "--set", "replicas=1",
             "--wait", "--timeout", "5m")  # fmt: skip
