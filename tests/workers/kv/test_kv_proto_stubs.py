"""The gRPC stubs build themselves on first import in a fresh checkout, importable by package path."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # spawns processes

WORKERS = Path(__file__).resolve().parents[3] / "workers"


def run_with_path(workers: Path, code: str) -> subprocess.CompletedProcess[str]:
    """`python -c code` in a fresh process that imports hybrid_workers from `workers` only."""
    argv = [sys.executable, "-c", code]
    return subprocess.run(argv, env={"PYTHONPATH": str(workers)}, capture_output=True, text=True, timeout=120)


def test_fresh_checkout_without_stubs_builds_them_on_import(tmp_path: Path) -> None:
    copy = tmp_path / "workers"
    shutil.copytree(WORKERS, copy, ignore=shutil.ignore_patterns("__pycache__", "*_pb2*", "kvproto-*"))
    stubs = copy / "hybrid_workers" / "kv" / "proto"
    assert not list(stubs.glob("*_pb2*"))
    probe = "import hybrid_workers.kv.proto as p; print(p.__file__); print(p.kv_pb2_grpc.PrefillWorkerStub)"
    done = run_with_path(copy, probe)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(str(stubs))  # the copy was imported, not the installed tree
    assert sorted(p.name for p in stubs.glob("*_pb2*")) == ["kv_pb2.py", "kv_pb2.pyi", "kv_pb2_grpc.py"]
    assert "from hybrid_workers.kv.proto import kv_pb2" in (stubs / "kv_pb2_grpc.py").read_text()
    assert not list(stubs.glob("kvproto-*"))  # the temporary build folder is gone


def test_stubs_are_rebuilt_when_the_proto_is_newer(tmp_path: Path) -> None:
    copy = tmp_path / "workers"
    shutil.copytree(WORKERS, copy, ignore=shutil.ignore_patterns("__pycache__"))
    proto = copy / "proto" / "kv.proto"
    proto.write_text(proto.read_text() + "\nmessage AddedLater { uint32 x = 1; }\n")
    probe = "import hybrid_workers.kv.proto as p; print(hasattr(p.kv_pb2, 'AddedLater'))"
    done = run_with_path(copy, probe)
    assert done.stdout.strip() == "True", done.stderr
