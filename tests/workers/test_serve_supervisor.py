"""The supervisor behind `serve`, with real child processes (small Python scripts standing in for workers)."""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest
from hybrid_workers.supervisor import ChildSpec, ExitCode, Supervisor
from support.serve import process_gone as gone

pytestmark = pytest.mark.slow  # spawns processes

SLEEPER = (sys.executable, "-c", "import time; print('up', flush=True); time.sleep(600)")


def spec(name: str, code: str, exit_code: ExitCode = ExitCode.PREFILL_EXITED) -> ChildSpec:
    return ChildSpec(name, (sys.executable, "-c", textwrap.dedent(code)), exit_code)


def test_child_output_is_relayed_with_its_name_and_kept_as_tail() -> None:
    out = io.StringIO()
    supervisor = Supervisor(
        [spec("prefill", "import sys; print('hello'); print('oops', file=sys.stderr)")], out
    )
    supervisor.start()
    outcome = supervisor.run()
    supervisor.stop_all()
    assert outcome.code == ExitCode.PREFILL_EXITED and outcome.child_status == 0
    assert "prefill | hello\n" in out.getvalue() and "prefill | oops\n" in out.getvalue()
    assert supervisor.children[0].tail() == ["hello", "oops"]


def test_hidden_lines_are_not_relayed_but_kept_in_the_tail() -> None:
    out = io.StringIO()
    code = "print('GET /ready 200'); print('request 1: success')"
    child = ChildSpec(
        "decode", (sys.executable, "-c", code), ExitCode.DECODE_EXITED, hide=re.compile("/ready")
    )
    supervisor = Supervisor([child], out)
    supervisor.start()
    supervisor.run()
    supervisor.stop_all()
    assert out.getvalue() == "decode  | request 1: success\n"
    assert supervisor.children[0].tail() == ["GET /ready 200", "request 1: success"]


def test_a_closed_output_does_not_block_a_chatty_child() -> None:
    out = io.StringIO()
    out.close()  # like `serve | head` after head exits: every write fails
    supervisor = Supervisor([spec("decode", "for i in range(20000): print('x' * 40, i)")], out)
    supervisor.start()
    outcome = supervisor.wait_ready(lambda: False, timeout=60)  # the child must be able to finish
    assert outcome is not None and outcome.code == ExitCode.PREFILL_EXITED and outcome.child_status == 0
    supervisor.stop_all()


def test_when_one_child_exits_the_other_is_stopped_and_the_code_names_the_first() -> None:
    specs = [
        ChildSpec("prefill", SLEEPER, ExitCode.PREFILL_EXITED),
        spec("decode", "import time, sys; time.sleep(0.5); sys.exit(7)", ExitCode.DECODE_EXITED),
    ]
    supervisor = Supervisor(specs, io.StringIO(), stop_timeout=5)
    supervisor.start()
    outcome = supervisor.run()
    statuses = supervisor.stop_all()
    assert outcome.code == ExitCode.DECODE_EXITED and outcome.child_status == 7
    assert statuses == {"decode": 7, "prefill": -signal.SIGTERM}


def test_stop_request_stops_every_child_and_reports_stopped() -> None:
    specs = [
        ChildSpec("prefill", SLEEPER, ExitCode.PREFILL_EXITED),
        ChildSpec("decode", SLEEPER, ExitCode.DECODE_EXITED),
    ]
    supervisor = Supervisor(specs, io.StringIO())
    supervisor.start()
    pids = [child.pid for child in supervisor.children]
    supervisor.request_stop()
    assert supervisor.run().code == ExitCode.STOPPED
    supervisor.stop_all()
    assert all(gone(pid) for pid in pids)


def started_stubborn(stop_timeout: float) -> Supervisor:
    """A supervisor whose one child ignores SIGTERM, returned once the child says its handler is set."""
    stubborn = """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print('up', flush=True)
        time.sleep(600)
    """
    supervisor = Supervisor([spec("decode", stubborn)], io.StringIO(), stop_timeout=stop_timeout)
    supervisor.start()
    while not supervisor.children[0].tail():  # wait until the handler is installed
        time.sleep(0.05)
    return supervisor


def test_a_child_that_ignores_sigterm_is_killed_after_the_stop_timeout() -> None:
    supervisor = started_stubborn(stop_timeout=0.5)
    assert supervisor.stop_all() == {"decode": -signal.SIGKILL}


def test_a_second_stop_request_kills_the_children_at_once() -> None:
    supervisor = started_stubborn(stop_timeout=600)
    supervisor.request_stop()
    assert supervisor.children[0].returncode() is None  # the first request only asks
    supervisor.request_stop()  # like a second Ctrl-C
    assert supervisor.stop_all() == {"decode": -signal.SIGKILL}


def test_wait_ready_returns_not_ready_after_the_timeout_and_child_exit_before_it() -> None:
    supervisor = Supervisor([ChildSpec("prefill", SLEEPER, ExitCode.PREFILL_EXITED)], io.StringIO())
    supervisor.start()
    assert supervisor.wait_ready(lambda: False, timeout=0.3).code == ExitCode.NOT_READY  # type: ignore[union-attr]
    assert supervisor.wait_ready(lambda: True, timeout=5) is None
    supervisor.stop_all()
    crashing = Supervisor([spec("decode", "raise SystemExit(3)", ExitCode.DECODE_EXITED)], io.StringIO())
    crashing.start()
    outcome = crashing.wait_ready(lambda: False, timeout=30)
    assert outcome is not None and outcome.code == ExitCode.DECODE_EXITED and outcome.child_status == 3


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_children_die_when_the_supervising_process_is_killed() -> None:
    script = """
        import io, sys, time
        from hybrid_workers.supervisor import ChildSpec, ExitCode, Supervisor
        s = Supervisor([ChildSpec("prefill", (sys.executable, "-c", "import time; time.sleep(600)"),
                                  ExitCode.PREFILL_EXITED)], io.StringIO())
        s.start()
        print(s.children[0].pid, flush=True)
        time.sleep(600)
    """
    parent = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    child_pid = int(parent.stdout.readline())
    assert not gone(child_pid, timeout=0.2)
    parent.kill()  # SIGKILL: the supervisor gets no chance to clean up; the kernel must
    parent.wait()
    assert gone(child_pid)


def test_serve_refuses_a_port_in_use_and_names_it() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "hybrid_workers", "serve", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "HYBRID_INFERENCE_MODEL": "/nonexistent"},
        )
    assert result.returncode == ExitCode.USER_ERROR
    assert f"--port {port}: 127.0.0.1:{port} is already in use" in result.stderr
