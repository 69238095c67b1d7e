"""The operator's assignment as the agent reads it: same digest, same flags, local refusals, argv."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pytest
from hybrid_operator.agent_contract import AgentLease, WorkerPhase, WorkerReport, assignment_digest
from hybrid_operator.models import parse as parse_resource
from hybrid_operator.render_agent import assignment, assignment_data
from hybrid_workers.agent import assignment as assign
from hybrid_workers.agent.lease import Identity, lease_patch
from hybrid_workers.enums import ComputeDevice, Engine


def rendered(tmp_path: Path, **agent: Any) -> dict[str, Any]:
    body = {
        "apiVersion": "hybridinference.dev/v1alpha1",
        "kind": "HybridInference",
        "metadata": {"name": "chat", "namespace": "inference", "uid": "u"},
        "spec": {
            "model": {"source": "meta-llama/Llama-3.1-8B-Instruct", "dtype": "bfloat16"},
            "decode": {"agent": {"name": "mac", "tlsDir": str(tmp_path), **agent}},
            "kvTransfer": {"tls": {"enabled": True, "secretName": "kv", "mutual": True}},
            "serving": {"port": 8100},
        },
    }
    cr = parse_resource(body)
    return assignment(cr, assignment_data(cr, "10.0.0.5:30051"))


@pytest.fixture
def tls_dir(tmp_path: Path) -> Path:
    for name in ("tls.crt", "tls.key", "ca.crt"):
        (tmp_path / name).write_text("pem")
    return tmp_path


def test_agent_reads_the_operators_assignment_with_the_same_digest(tls_dir: Path) -> None:
    configmap = rendered(tls_dir)
    job = assign.parse(configmap)
    assert job.owner == "inference/chat" and job.port == 8100
    assert job.digest == assignment_digest(configmap["data"])
    assert job.flags["--prefill"] == "10.0.0.5:30051" and job.flags["--dtype"] == "bfloat16"
    assert job.flags["--tls-ca"] == f"{tls_dir}/ca.crt" and "--device" not in job.flags
    assert configmap["metadata"]["labels"]["hybridinference.dev/agent"] == "mac"
    assign.check_files(job, "mac")  # an HF id is not checked; the TLS files exist


def test_command_adds_this_machines_host_engine_and_device(tls_dir: Path) -> None:
    job = assign.parse(rendered(tls_dir))
    torch_argv = assign.command(job, "0.0.0.0", Engine.TORCH, ComputeDevice.MPS)
    assert torch_argv[1:4] == ["-m", "hybrid_workers", "decode"]
    assert torch_argv[-6:] == ["--host", "0.0.0.0", "--engine", "torch", "--device", "mps"]
    mlx_argv = assign.command(job, "0.0.0.0", Engine.MLX, ComputeDevice.METAL)
    assert mlx_argv[-4:] == ["--host", "0.0.0.0", "--engine", "mlx"] and "--device" not in mlx_argv


def test_worker_environment_drops_variables_that_would_override_decode_flags() -> None:
    env = assign.worker_environment({"HYBRID_INFERENCE_PORT": "1", "HYBRID_INFERENCE_CACHE_DIR": "/c"})
    assert "HYBRID_INFERENCE_PORT" not in env and env["HYBRID_INFERENCE_CACHE_DIR"] == "/c"


@pytest.mark.parametrize(
    ("change", "reason", "named"),
    [
        ({"protocol": "2"}, "IncompatibleOperator", "protocol 2"),
        ({"flags.json": json.dumps({"--rm-rf": "/"})}, "UnknownFlag", "--rm-rf"),
        ({"port": "eighty"}, "MalformedAssignment", "port"),
    ],
)
def test_assignment_this_agent_cannot_run_is_refused(
    tls_dir: Path, change: dict[str, str], reason: str, named: str
) -> None:
    configmap = rendered(tls_dir)
    configmap["data"].update(change)
    with pytest.raises(assign.Refusal, match=named) as refused:
        assign.parse(configmap)
    assert refused.value.reason == reason


def test_missing_model_folder_and_tls_files_are_refused(tmp_path: Path) -> None:
    job = assign.parse(rendered(tmp_path, modelPath=str(tmp_path / "absent")))
    with pytest.raises(assign.Refusal, match=r"model folder .*absent not found on agent mac") as refused:
        assign.check_files(job, "mac")
    assert refused.value.reason == "ModelMissing"
    (tmp_path / "absent").mkdir()
    with pytest.raises(assign.Refusal, match=r"--tls-cert .*tls\.crt not found") as refused:
        assign.check_files(job, "mac")
    assert refused.value.reason == "TLSFileMissing"


def test_lease_the_agent_writes_is_what_the_operator_reads() -> None:
    report = WorkerReport(WorkerPhase.READY, port=8100, config="abc", pid=42, restarts=1)
    identity = Identity("mac", "192.0.2.7", "mlx", "metal", {"id": "m3-ultra"}, tls_dir="/Users/ai/tls")
    now = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    patch = lease_patch(identity, 30, {"inference/chat": report}, 64 << 30, "running", now)
    lease = AgentLease.from_object({"metadata": {"name": "mac", **patch["metadata"]}, "spec": patch["spec"]})
    assert (lease.address, lease.engine, lease.device) == ("192.0.2.7", "mlx", "metal")
    assert lease.free_memory_bytes == 64 << 30 and lease.profile == {"id": "m3-ultra"}
    assert lease.workers == {"inference/chat": report} and lease.renewed == now and lease.duration_s == 30
    assert lease.tls_dir == "/Users/ai/tls"  # auto placement's assignments point there
