"""Restarting crashed workers (restarts.py) with real child processes standing in for the workers."""

from __future__ import annotations

import io
import sys
import textwrap
from pathlib import Path

import pytest
from hybrid_workers import restarts
from hybrid_workers.errors import UserError
from hybrid_workers.restarts import CrashLog, RestartPolicy
from hybrid_workers.supervisor import ChildSpec, ExitCode, Supervisor

SLEEPER = (sys.executable, "-c", "import time; print('up', flush=True); time.sleep(600)")
FAST = RestartPolicy(max_restarts=2, window_s=60, backoff_s=0.01, max_backoff_s=0.02)


def spec(name: str, code: str, exit_code: ExitCode) -> ChildSpec:
    return ChildSpec(name, (sys.executable, "-c", textwrap.dedent(code)), exit_code)


def test_the_delay_doubles_per_crash_in_the_window_and_the_crash_after_the_last_restart_gives_up() -> None:
    log = CrashLog(RestartPolicy(max_restarts=3, window_s=60, backoff_s=0.5, max_backoff_s=1.5))
    assert [log.crashed(t) for t in (0.0, 1.0, 2.0)] == [0.5, 1.0, 1.5]
    assert log.crashed(3.0) is None and log.recent == 4
    later = CrashLog(RestartPolicy(max_restarts=1, window_s=10))
    assert later.crashed(0.0) == 0.5 and later.crashed(11.0) == 0.5  # the first crash was forgotten


def test_zero_restarts_gives_up_at_the_first_crash_and_bad_values_are_refused() -> None:
    assert CrashLog(RestartPolicy(max_restarts=0)).crashed(0.0) is None
    with pytest.raises(UserError, match="--max-restarts -1"):
        RestartPolicy(max_restarts=-1)
    with pytest.raises(UserError, match="--restart-window 0"):
        RestartPolicy(window_s=0)


def test_a_crashed_child_is_restarted_announced_back_and_the_other_keeps_running(tmp_path: Path) -> None:
    marker = tmp_path / "crashed-once"
    crash_once = f"""
        import pathlib, sys, time
        marker = pathlib.Path({str(marker)!r})
        print('started', flush=True)
        if not marker.exists():
            marker.touch()
            sys.exit(9)
        time.sleep(600)
    """
    said: list[str] = []
    supervisor = Supervisor(
        [
            spec("prefill", crash_once, ExitCode.PREFILL_EXITED),
            ChildSpec("decode", SLEEPER, ExitCode.DECODE_EXITED),
        ],
        io.StringIO(),
    )
    supervisor.start()
    first_prefill, decode_pid = supervisor.children[0].pid, supervisor.children[1].pid

    def say(text: str) -> None:
        said.append(text)
        if text.startswith("prefill worker is back"):
            supervisor.request_stop()

    patient = RestartPolicy(max_restarts=2, window_s=60, backoff_s=0.3)  # many polls while it waits

    def started_twice() -> bool:  # "back" = the restarted process got as far as its first line
        return supervisor.children[0].tail().count("started") == 2

    outcome = restarts.supervise(supervisor, patient, say, {"prefill": started_twice})
    statuses = supervisor.stop_all()
    assert outcome.code == ExitCode.STOPPED, said
    assert said[0].startswith("the prefill worker exited 9; restarting it in 0.3 s (crash 1 of 2")
    assert sum("restarting it" in line for line in said) == 1  # one crash, however long the wait
    assert said[1] == f"prefill worker pid {supervisor.children[0].pid}: restarted"
    assert supervisor.children[0].pid != first_prefill and supervisor.children[1].pid == decode_pid
    assert said[2].startswith("prefill worker is back") and statuses["decode"] < 0  # stopped by SIGTERM
    assert supervisor.children[0].tail() == ["started", "started"]


def test_a_child_crashing_over_and_over_ends_supervision_with_its_exit_code() -> None:
    said: list[str] = []
    supervisor = Supervisor(
        [
            ChildSpec("prefill", SLEEPER, ExitCode.PREFILL_EXITED),
            spec("decode", "raise SystemExit(7)", ExitCode.DECODE_EXITED),
        ],
        io.StringIO(),
    )
    supervisor.start()
    outcome = restarts.supervise(supervisor, FAST, said.append)
    supervisor.stop_all()
    assert (outcome.code, outcome.child_status, outcome.crashes) == (ExitCode.DECODE_EXITED, 7, 3)
    assert outcome.child is supervisor.children[1]
    assert sum(line.endswith(": restarted") for line in said) == 2  # max_restarts=2, the third crash gives up
