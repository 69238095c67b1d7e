"""A native decode agent end to end: the real operator (KopfRunner) and a real `hybrid-inference agent`
process against kmock's Kubernetes emulator, with real prefill and decode workers on this machine.

The emulator routes nothing, so the test starts the prefill worker itself, gives its address as
decode.agent.prefillAddress, and calls the address of the EndpointSlice the operator wrote. It plays
two controllers the emulator lacks: the Deployment controller (marks the prefill Deployment
available: its real worker runs here) and the garbage collector (deletes the assignment ConfigMap
when its HybridInference goes). The chart's part, the agent's Lease, is created here too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from emulated_cluster import EmulatedCluster
from emulated_cluster import wait_for as poll
from hybrid_operator.models import parse
from hybrid_operator.render_agent import assignment, assignment_data
from hybrid_operator.render_common import KV_DATA_PORT, PREFILL_PORT
from kopf.testing import KopfRunner
from support.loopback import free_ports
from support.pki import write_tls_dir
from support.serve import process_gone

pytestmark = [pytest.mark.operator, pytest.mark.slow]
# Hang guard of every wait: four worker processes start here; on a loaded 2-core machine each takes long.
HANG_GUARD_S = 240.0

NS = "inference"
AGENT = "mac"
HINF = f"/apis/hybridinference.dev/v1alpha1/namespaces/{NS}/hybridinferences"
DEPLOYMENTS = f"/apis/apps/v1/namespaces/{NS}/deployments"
CONFIGMAPS = f"/api/v1/namespaces/{NS}/configmaps"
SLICES = f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices"
SERVICES = f"/api/v1/namespaces/{NS}/services"
LEASE = f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/{AGENT}"
SPARK = {
    "metadata": {
        "name": "spark",
        "labels": {"hybridinference.dev/role": "prefill", "hybridinference.dev/device": "dgx-spark"},
    },
    "status": {
        "conditions": [{"type": "Ready", "status": "True"}],
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
    },
}


def wait_for(what: str, probe: Any, timeout: float = HANG_GUARD_S) -> Any:
    """Poll until `probe` is truthy (emulated_cluster.wait_for with this module's hang guard)."""
    return poll(what, probe, timeout)


def resource(name: str, spec: dict[str, Any], generation: int = 1) -> dict[str, Any]:
    meta = {"name": name, "namespace": NS, "uid": f"uid-{name}", "generation": generation}
    return {
        "apiVersion": "hybridinference.dev/v1alpha1",
        "kind": "HybridInference",
        "metadata": meta,
        "spec": spec,
    }


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tls_dir(tmp_path_factory.mktemp("mac-tls"))


@pytest.fixture(scope="module")
def cluster() -> Iterator[EmulatedCluster]:
    emulated = EmulatedCluster().start()
    emulated.create("/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", **SPARK})
    secret = {"tls.crt": "eA==", "tls.key": "eA==", "ca.crt": "eA=="}  # the operator checks keys only
    body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "kv-tls"}, "data": secret}
    emulated.create(f"/api/v1/namespaces/{NS}/secrets", body)
    labels = {"hybridinference.dev/agent": AGENT}  # as the chart creates it
    lease = {
        "metadata": {"name": AGENT, "namespace": NS, "labels": labels},
        "spec": {"holderIdentity": AGENT},
    }
    emulated.create(
        LEASE.rsplit("/", 1)[0], {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", **lease}
    )
    yield emulated
    emulated.stop()


@pytest.fixture(scope="module")
def kubeconfig(cluster: EmulatedCluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cluster.write_kubeconfig(tmp_path_factory.mktemp("kube") / "config", NS)


@pytest.fixture(scope="module")
def operator(kubeconfig: Path) -> Iterator[KopfRunner]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KUBECONFIG", str(kubeconfig))
        patch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        patch.setenv("HYBRID_INFERENCE_RESYNC_SECONDS", "1")  # Lease expiry is noticed by the resync
        args = ["run", "-m", "hybrid_operator", "--namespace", NS, "--standalone"]
        with KopfRunner(args, timeout=60) as runner:
            yield runner
    assert runner.exception is None, runner.output


@pytest.fixture(scope="module")
def prefill_ports() -> tuple[int, int]:
    """The prefill worker's gRPC and KV data ports."""
    grpc_port, data_port = free_ports(2)
    return grpc_port, data_port


@pytest.fixture(scope="module")
def prefill(tiny_model_dir: Path, tls_dir: Path, prefill_ports: tuple[int, int]) -> Iterator[str]:
    """A real prefill worker with mTLS, as the prefill pod would run it; yields HOST:PORT."""
    port, data_port = prefill_ports
    argv = [sys.executable, "-m", "hybrid_workers", "prefill", "--model", str(tiny_model_dir)]
    argv += ["--kv-data-port", str(data_port)]  # a fixed port, as in the operator's pods
    argv += ["--device", "cpu", "--dtype", "float32", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--tls-cert", str(tls_dir / "tls.crt"), "--tls-key", str(tls_dir / "tls.key")]
    argv += ["--tls-ca", str(tls_dir / "ca.crt"), "--metrics-port", "0"]  # 0: off (9090 may be taken)
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    assert process.stdout is not None
    first_line = process.stdout.readline()  # printed once it listens
    assert "prefill worker:" in first_line, f"prefill worker exited with {process.wait()}"
    yield f"127.0.0.1:{port}"
    process.terminate()
    process.wait(30)


def start_agent(
    kubeconfig: Path, tls_dir: Path, *extra: str, stderr: int | None = None
) -> subprocess.Popen[str]:
    """The agent in its own process group (launchd stops the group; so does `kill_agent`)."""
    argv = [sys.executable, "-m", "hybrid_workers", "agent", "--name", AGENT, "--namespace", NS]
    argv += ["--tls-dir", str(tls_dir)]  # announced: auto placement's assignments use it
    argv += ["--kubeconfig", str(kubeconfig), "--address", "127.0.0.1", "--listen-host", "127.0.0.1"]
    argv += ["--device", "cpu", "--lease-seconds", "3", "--renew-seconds", "0.5", "--watch-seconds", "5"]
    # What the planner weighs with placement.mode auto: this machine's kind (torch on a CPU).
    argv += ["--device-profile", "generic-cpu"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([*argv, *extra], env=env, text=True, start_new_session=True, stderr=stderr)


def kill_agent(agent: subprocess.Popen[str]) -> None:
    """SIGKILL the agent's whole group (a crash or power loss: no clean shutdown, the Lease expires)."""
    os.killpg(agent.pid, signal.SIGKILL)
    agent.wait(30)


@pytest.fixture(scope="module")
def agent(
    kubeconfig: Path, operator: KopfRunner, tls_dir: Path
) -> Iterator[dict[str, subprocess.Popen[str]]]:
    holder = {"process": start_agent(kubeconfig, tls_dir)}
    yield holder
    process = holder["process"]
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(60)


def workers(cluster: EmulatedCluster) -> dict[str, Any]:
    lease = cluster.get(LEASE) or {}
    raw = (lease.get("metadata", {}).get("annotations") or {}).get("hybridinference.dev/workers", "{}")
    result: dict[str, Any] = json.loads(raw)
    return result


def report(cluster: EmulatedCluster, name: str) -> dict[str, Any]:
    found: dict[str, Any] = workers(cluster).get(f"{NS}/{name}", {})
    return found


def status(cluster: EmulatedCluster, name: str) -> dict[str, Any]:
    found: dict[str, Any] = (cluster.get(f"{HINF}/{name}") or {}).get("status") or {}
    return found


def condition(found: dict[str, Any], ctype: str) -> dict[str, Any]:
    return next((c for c in found.get("conditions", []) if c["type"] == ctype), {})


def complete(base_url: str) -> dict[str, Any]:
    models = json.loads(urllib.request.urlopen(base_url + "/v1/models", timeout=10).read())
    request_body = {
        "model": models["data"][0]["id"],
        "prompt": "hello agent",
        "max_tokens": 4,
        "temperature": 0,
    }
    body = json.dumps(request_body).encode()
    request = urllib.request.Request(base_url + "/v1/completions", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return answer


def metric(base_url: str, name: str, label: str = "") -> float:
    """Sum of the samples of `name` (with `label`, e.g. 'transport="tcp"', when given)."""
    text = urllib.request.urlopen(base_url + "/metrics", timeout=10).read().decode()
    lines = [line for line in text.splitlines() if line.startswith(name) and label in line]
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines)


def served_url(cluster: EmulatedCluster, name: str) -> str:
    """http://ADDRESS:PORT of the ready endpoint in the EndpointSlice the operator wrote."""

    def ready() -> str | None:
        found = cluster.get(f"{SLICES}/{name}-api-agent") or {}
        endpoints = [e for e in found.get("endpoints", []) if e.get("conditions", {}).get("ready")]
        if not endpoints:
            return None
        return f"http://{endpoints[0]['addresses'][0]}:{found['ports'][0]['port']}"

    url: str = wait_for(f"ready EndpointSlice of {name}", ready, timeout=HANG_GUARD_S)
    return url


def spec(tiny_model_dir: Path, tls_dir: Path, prefill: str, port: int, **agent: Any) -> dict[str, Any]:
    target = {"name": AGENT, "prefillAddress": prefill, "tlsDir": str(tls_dir), **agent}
    return {
        "model": {"source": str(tiny_model_dir), "dtype": "float32"},
        "prefill": {"device": "cpu"},
        "decode": {"device": "cpu", "agent": target},
        "kvTransfer": {"tls": {"enabled": True, "secretName": "kv-tls", "mutual": True}},
        # fallback fail: a failed remote prefill answers 503, so a 200 proves the KV came from prefill
        "serving": {"port": port, "remotePrefillMinTokens": 1, "fallback": "fail"},
    }


def mark_prefill_available(cluster: EmulatedCluster, name: str) -> None:
    wait_for(f"{name}-prefill Deployment", lambda: cluster.get(f"{DEPLOYMENTS}/{name}-prefill"))
    ready = {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1, "updatedReplicas": 1}
    cluster.patch(f"{DEPLOYMENTS}/{name}-prefill/status", {"status": ready})


def test_agent_serves_restarts_fails_over_and_stops_its_worker(
    cluster: EmulatedCluster,
    kubeconfig: Path,
    agent: dict[str, subprocess.Popen[str]],
    prefill: str,
    tiny_model_dir: Path,
    tls_dir: Path,
) -> None:
    (port,) = free_ports(1)
    cluster.create(
        HINF, resource("macd", spec(tiny_model_dir, tls_dir, prefill, port, fallback="deployment"))
    )
    mark_prefill_available(cluster, "macd")

    # create → the agent starts the worker → a request is prefilled remotely and decoded by it
    url = served_url(cluster, "macd")
    assert complete(url)["choices"][0]["text"]
    assert metric(url, "hybrid_inference_kv_transfer_bytes_total") > 0
    # The KV came over the data connection (mTLS with the agent's certificate), not as gRPC frames.
    assert metric(url, "hybrid_inference_kv_wire_seconds_count", 'transport="tcp"') > 0
    ready = wait_for(
        "phase Ready", lambda: status(cluster, "macd").get("phase") == "Ready" and status(cluster, "macd")
    )
    assert ready["agent"]["state"] == "Ready" and ready["agent"]["address"] == "127.0.0.1"
    assert cluster.get(f"{DEPLOYMENTS}/macd-decode")["spec"]["replicas"] == 0  # fallback idle
    first_pid = report(cluster, "macd")["pid"]

    # a second resource wanting the same port on the same agent is refused; the first keeps serving
    cluster.create(HINF, resource("twin", spec(tiny_model_dir, tls_dir, prefill, port)))
    twin = wait_for(
        "twin refused",
        lambda: (s := status(cluster, "twin")).get("agent", {}).get("state") == "Refused" and s,
    )
    assert "PortInUse" in twin["agent"]["reason"] and f"{NS}/macd" in twin["agent"]["reason"]
    assert condition(twin, "Degraded")["reason"] == "PortInUse"
    assert "pid" not in report(cluster, "twin")  # nothing started
    assert report(cluster, "macd")["pid"] == first_pid and complete(url)["choices"][0]["text"]
    cluster.delete(f"{HINF}/twin")
    cluster.delete(f"{CONFIGMAPS}/twin-agent")  # the garbage collector's part

    # edit the spec → the worker is restarted with the new flags
    cluster.patch(f"{HINF}/macd", {"metadata": {"generation": 2}, "spec": {"serving": {"maxConcurrency": 3}}})
    edited = wait_for(
        "a ready worker with a new pid",
        lambda: (r := report(cluster, "macd")).get("phase") == "ready" and r.get("pid") != first_pid and r,
        timeout=HANG_GUARD_S,
    )
    argv = Path(f"/proc/{edited['pid']}/cmdline").read_bytes().split(b"\0")
    assert argv[argv.index(b"--max-concurrency") + 1] == b"3"
    assert process_gone(first_pid)

    # kill the worker → the agent restarts it
    os.kill(edited["pid"], signal.SIGKILL)
    wait_for(
        "restarted worker ready",
        lambda: (r := report(cluster, "macd")).get("restarts", 0) >= 1 and r.get("phase") == "ready",
        timeout=HANG_GUARD_S,
    )

    # stop the agent (its group: workers too) → Lease expires → Degraded, fallback Deployment scaled up
    kill_agent(agent["process"])
    lost = wait_for(
        "agent Lost", lambda: (s := status(cluster, "macd")).get("agent", {}).get("state") == "Lost" and s
    )
    assert lost["phase"] == "Degraded"
    assert condition(lost, "Degraded")["reason"] == "AgentLost"
    assert wait_for(
        "fallback Deployment at 1", lambda: cluster.get(f"{DEPLOYMENTS}/macd-decode")["spec"]["replicas"] == 1
    )

    # agent back → Ready, fallback idle again
    agent["process"] = start_agent(kubeconfig, tls_dir)
    wait_for("Ready again", lambda: status(cluster, "macd").get("phase") == "Ready", timeout=HANG_GUARD_S)
    assert wait_for(
        "fallback idle", lambda: cluster.get(f"{DEPLOYMENTS}/macd-decode")["spec"]["replicas"] == 0
    )
    pid = report(cluster, "macd")["pid"]

    # delete → (the garbage collector deletes the assignment) → the worker is stopped
    cluster.delete(f"{HINF}/macd")

    def collected() -> bool:
        # The garbage collector deletes the orphaned assignment, again if a pass already in flight
        # re-applied it; the emulator has no collector, so the test plays it.
        cluster.delete(f"{CONFIGMAPS}/macd-agent")
        return f"{NS}/macd" not in workers(cluster)

    wait_for("worker gone from the Lease", collected)
    assert process_gone(pid)


def test_unknown_agent_name_is_an_invalid_spec_and_assigns_nothing(
    cluster: EmulatedCluster, operator: KopfRunner, tiny_model_dir: Path, tls_dir: Path
) -> None:
    body = spec(tiny_model_dir, tls_dir, "127.0.0.1:1", 8000)
    body["decode"]["agent"]["name"] = "mac-that-never-joined"
    cluster.create(HINF, resource("nobody", body))
    found = wait_for(
        "Invalid", lambda: status(cluster, "nobody").get("phase") == "Invalid" and status(cluster, "nobody")
    )
    assert condition(found, "InvalidSpec")["reason"] == "UnknownAgent"
    assert "mac-that-never-joined" in condition(found, "InvalidSpec")["message"]
    assert cluster.get(f"{CONFIGMAPS}/nobody-agent") is None
    assert cluster.get(f"{DEPLOYMENTS}/nobody-prefill") is None


def test_model_folder_missing_on_the_agent_is_refused_before_anything_starts(
    cluster: EmulatedCluster, agent: dict[str, subprocess.Popen[str]], tiny_model_dir: Path, tls_dir: Path
) -> None:
    (port,) = free_ports(1)
    body = spec(tiny_model_dir, tls_dir, "127.0.0.1:1", port, modelPath="/nonexistent/llama")
    cluster.create(HINF, resource("nomodel", body))
    found = wait_for(
        "agent Refused",
        lambda: (s := status(cluster, "nomodel")).get("agent", {}).get("state") == "Refused" and s,
    )
    assert "ModelMissing" in found["agent"]["reason"] and "/nonexistent/llama" in found["agent"]["reason"]
    assert condition(found, "DecodeReady")["status"] == "False"
    assert "pid" not in report(cluster, "nomodel")


def test_assignment_from_an_incompatible_operator_is_refused_with_a_reason(
    cluster: EmulatedCluster, agent: dict[str, subprocess.Popen[str]]
) -> None:
    data = {
        "protocol": "99",
        "operatorVersion": "9.0.0",
        "owner": f"{NS}/future",
        "port": "9",
        "flags.json": "{}",
    }
    labels = {"hybridinference.dev/agent": AGENT}
    meta = {"name": "future-agent", "namespace": NS, "labels": labels}
    cluster.create(CONFIGMAPS, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data})
    refused = wait_for(
        "refusal in the Lease",
        lambda: report(cluster, "future").get("phase") == "refused" and report(cluster, "future"),
    )
    assert refused["reason"] == "IncompatibleOperator"
    assert "protocol 99" in refused["message"] and "9.0.0" in refused["message"]


def test_expired_kubeconfig_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hybrid_workers.cli import main

    emulated = EmulatedCluster(expired_token="test-token").start()
    try:
        config = emulated.write_kubeconfig(tmp_path / "config", NS)
        status_code = main(
            [
                "agent",
                "--name",
                AGENT,
                "--namespace",
                NS,
                "--kubeconfig",
                str(config),
                "--address",
                "127.0.0.1",
            ]
        )
    finally:
        emulated.stop()
    err = capsys.readouterr().err.strip().splitlines()
    assert status_code == 2
    assert len(err) == 1 and "401 Unauthorized" in err[0] and str(config) in err[0]


@pytest.mark.parametrize(
    ("content", "expected"),
    [(None, "no such file"), ("current-context: x\n", "no context named 'x'"), ("[", "not YAML")],
)
def test_missing_or_broken_kubeconfig_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, expected: str
) -> None:
    from hybrid_workers.cli import main

    path = tmp_path / "config"
    if content is not None:
        path.write_text(content)
    assert main(["agent", "--name", AGENT, "--namespace", NS, "--kubeconfig", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0] and str(path) in err[0]


def test_agent_keeps_its_worker_through_an_api_outage_and_reconnects(
    prefill: str, tiny_model_dir: Path, tls_dir: Path, tmp_path: Path
) -> None:
    api_port, worker_port = free_ports(2)
    cr = parse(resource("outage", spec(tiny_model_dir, tls_dir, prefill, worker_port)))
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": AGENT, "namespace": NS},
    }
    state = (
        ("v1/configmaps", assignment(cr, assignment_data(cr, prefill))),
        ("coordination.k8s.io/v1/leases", lease),
    )
    first = EmulatedCluster(port=api_port, objects=state).start()
    agent = start_agent(first.write_kubeconfig(tmp_path / "config", NS), tls_dir, stderr=subprocess.PIPE)
    lines: list[str] = []
    assert agent.stderr is not None
    threading.Thread(target=lambda: lines.extend(agent.stderr or []), daemon=True).start()
    second = None
    try:
        before = wait_for(
            "worker ready",
            lambda: report(first, "outage").get("phase") == "ready" and report(first, "outage"),
            timeout=HANG_GUARD_S,
        )
        first.stop()  # the API server goes away
        wait_for("the agent noticing the outage", lambda: any("not renewed" in line for line in lines))
        ready = urllib.request.urlopen(f"http://127.0.0.1:{worker_port}/ready", timeout=10)
        assert ready.status == 200  # still serving
        second = EmulatedCluster(port=api_port, objects=state).start()  # back, with its stored state
        after = wait_for(
            "the Lease renewed on the API server that came back", lambda: report(second, "outage").get("pid")
        )
        assert after == before["pid"] and report(second, "outage").get("restarts", 0) == 0
        assert agent.poll() is None
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(60)
        if second is not None:
            second.stop()
    assert process_gone(before["pid"])  # a clean stop stops its workers


def test_auto_placement_weighs_the_agents_profile_and_hands_the_prediction_to_its_worker(
    cluster: EmulatedCluster, agent: dict[str, subprocess.Popen[str]], tiny_model_dir: Path, tls_dir: Path
) -> None:
    (port,) = free_ports(1)
    body = spec(tiny_model_dir, tls_dir, "127.0.0.1:1", port, modelPath="/nonexistent/auto")  # no worker
    body["placement"] = {"mode": "auto"}
    cluster.create(HINF, resource("auto", body))
    found = wait_for("a planned placement", lambda: (s := status(cluster, "auto")).get("prediction") and s)
    assert (found["placement"]["prefillNode"], found["placement"]["decodeNode"]) == (
        "spark",
        f"agent:{AGENT}",
    )
    assert found["prediction"]["decodeTokensPerSecond"] > 0
    flags = json.loads(cluster.get(f"{CONFIGMAPS}/auto-agent")["data"]["flags.json"])
    planned = float(flags["--predicted-decode-tokens-per-second"])
    assert planned == pytest.approx(found["prediction"]["decodeTokensPerSecond"], rel=1e-6)


def test_auto_placement_without_a_named_agent_assigns_decode_to_the_live_agent_which_starts_it(
    cluster: EmulatedCluster,
    agent: dict[str, subprocess.Popen[str]],
    prefill: str,
    prefill_ports: tuple[int, int],
    tiny_model_dir: Path,
    tls_dir: Path,
) -> None:
    (port,) = free_ports(1)
    body = spec(tiny_model_dir, tls_dir, prefill, port)
    del body["decode"]["agent"]  # nobody names the agent: the planner chooses it
    # Decode pods would need a GPU, which spark lacks: the live agent is the one decode candidate.
    body["decode"] = {"device": "auto", "gpus": 1}
    body["placement"] = {"mode": "auto"}
    wait_for(
        "the agent renewing its Lease", lambda: (cluster.get(LEASE) or {}).get("spec", {}).get("renewTime")
    )
    cluster.create(HINF, resource("picked", body))
    mark_prefill_available(cluster, "picked")
    seen: list[dict[str, Any]] = [{}]

    def on_agent() -> dict[str, Any] | None:
        seen[0] = status(cluster, "picked")
        return seen[0] if seen[0].get("placement", {}).get("decodeNode") == f"agent:{AGENT}" else None

    try:
        placed = wait_for("decode on the agent", on_agent)
    except AssertionError as failed:
        raise AssertionError(f"{failed}; status: {seen[0]}; Lease: {cluster.get(LEASE)}") from None
    assert (
        placed["placement"]["prefillNode"] == "spark"
        and "agent device profile generic-cpu, engine torch/cpu" in (placed["placement"]["reason"])
    )
    # The API server's NodePort allocator (the emulator has none): spark's InternalIP is this machine,
    # so the NodePorts are the real prefill worker's ports (gRPC, and the KV data connection's).
    service = wait_for("NodePort prefill Service", lambda: (s := cluster.get(f"{SERVICES}/picked-prefill"))
                       and s["spec"].get("type") == "NodePort" and s)  # fmt: skip
    prefill_port, data_port = prefill_ports
    mapped = {PREFILL_PORT: prefill_port, KV_DATA_PORT: data_port}
    ports = [
        p | ({"nodePort": mapped[p["port"]]} if p["port"] in mapped else {}) for p in service["spec"]["ports"]
    ]
    cluster.patch(f"{SERVICES}/picked-prefill", {"spec": {"ports": ports}})

    # The agent starts the worker the operator assigned, as for a named agent (whose requests the first
    # test serves end to end): the prefill worker's address, the TLS files of the announced folder.
    pid = wait_for("worker started", lambda: report(cluster, "picked").get("pid"))
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert argv[argv.index(b"--prefill") + 1] == prefill.encode()
    assert argv[argv.index(b"--prefill-data-port") + 1] == str(data_port).encode()
    assert argv[argv.index(b"--tls-ca") + 1] == str(tls_dir / "ca.crt").encode()
    cluster.delete(f"{HINF}/picked")

    def collected() -> bool:
        cluster.delete(f"{CONFIGMAPS}/picked-agent")  # the garbage collector's part
        return f"{NS}/picked" not in workers(cluster)

    wait_for("worker gone from the Lease", collected)
    assert process_gone(pid)
