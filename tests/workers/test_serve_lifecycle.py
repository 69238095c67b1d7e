"""`hybrid-inference serve` as a process: clean stop on Ctrl-C/SIGTERM, and a dying worker takes serve down.

Exit codes are hybrid_workers.supervisor.ExitCode (documented in docs/operations.md).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from hybrid_workers.supervisor import ExitCode
from support.serve import process_gone, running_serve

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_signal_stops_both_workers_and_exits_0(tiny_model_dir: Path, sig: signal.Signals) -> None:
    with running_serve(tiny_model_dir) as serve:
        workers = dict(serve.pids)
        assert set(workers) == {"prefill", "decode"}
        assert serve.stop(sig) == ExitCode.STOPPED
    orphans = {role: pid for role, pid in workers.items() if not process_gone(pid)}
    assert not orphans, f"workers still running after serve exited: {orphans}\n{serve.output()}"


@pytest.mark.parametrize(
    ("victim", "survivor", "code"),
    [("prefill", "decode", ExitCode.PREFILL_EXITED), ("decode", "prefill", ExitCode.DECODE_EXITED)],
)
def test_when_a_worker_dies_serve_stops_the_other_and_exit_code_names_it(
    tiny_model_dir: Path, victim: str, survivor: str, code: ExitCode
) -> None:
    with running_serve(tiny_model_dir) as serve:
        os.kill(serve.pids[victim], signal.SIGKILL)
        assert serve.process.wait(60) == code, serve.output()
        assert process_gone(serve.pids[survivor]), f"the {survivor} worker outlived serve"
        serve.wait_for_line(rf"the {victim} worker exited with status -9; stopped the {survivor} worker", 10)
