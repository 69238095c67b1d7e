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
from collections.abc import Iterator
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
