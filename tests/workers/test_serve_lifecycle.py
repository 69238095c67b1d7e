"""`hybrid-inference serve` as a process: clean stop on Ctrl-C/SIGTERM; start-up failures and (without
restarts) a dying worker take serve down. Restarts: test_serve_resilience.py.

Exit codes are hybrid_workers.supervisor.ExitCode (documented in docs/operations.md).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from hybrid_workers.supervisor import ExitCode
from support.serve import process_gone, running_serve, start_serve

pytestmark = pytest.mark.slow


# SIGTERM and SIGHUP take the same handler as SIGINT; killing the decode worker takes the same path as
# killing the prefill worker (test_serve_supervisor covers both exit codes). Each serve costs seconds.


def test_ctrl_c_stops_both_workers_and_exits_0(tiny_model_dir: Path) -> None:
    with running_serve(tiny_model_dir) as serve:
        workers = dict(serve.pids)
        assert set(workers) == {"prefill", "decode"}
        assert serve.stop(signal.SIGINT) == ExitCode.STOPPED
    orphans = {role: pid for role, pid in workers.items() if not process_gone(pid)}
    assert not orphans, f"workers still running after serve exited: {orphans}\n{serve.output()}"


def test_without_restarts_a_dying_prefill_worker_stops_decode_and_exits_3(tiny_model_dir: Path) -> None:
    with running_serve(tiny_model_dir, "--max-restarts", "0") as serve:
        os.kill(serve.pids["prefill"], signal.SIGKILL)
        assert serve.process.wait(60) == ExitCode.PREFILL_EXITED, serve.output()
        assert process_gone(serve.pids["decode"]), "the decode worker outlived serve"
        serve.wait_for_line(r"the prefill worker crashed 1 times within 60 s \(last: ended by SIGKILL\)", 10)


def test_a_worker_failing_at_start_up_is_reported_with_its_own_error(tiny_model_dir: Path) -> None:
    serve = start_serve(tiny_model_dir, "--prefill-arg=--chunk-bytes=lots")
    assert serve.process.wait(120) == ExitCode.PREFILL_EXITED, serve.output()
    serve.wait_for_line(r"the prefill worker exited 2; stopped the decode worker", 10)
    serve.wait_for_line(r"--chunk-bytes 'lots': give a byte count", 10)
    assert process_gone(serve.pids["decode"])


def test_readiness_timeout_stops_both_workers_and_exits_5(tiny_model_dir: Path) -> None:
    serve = start_serve(tiny_model_dir, "--ready-timeout", "0.2")
    assert serve.process.wait(120) == ExitCode.NOT_READY, serve.output()
    serve.wait_for_line(r"not ready after 0.2 s \(--ready-timeout\)", 10)
    assert all(process_gone(pid) for pid in serve.pids.values())
