"""Run tests while busy loops keep every core saturated: the suite must pass on a loaded CI box.

Usage (from the repository root, after `make test` or at least `make .venv/.installed proto`):

    .venv/bin/python .ci/busy_acceptance.py                   # network + serve tests, 10 runs
    .venv/bin/python .ci/busy_acceptance.py --runs 3 -- tests/workers/test_serve_supervisor.py
    .venv/bin/python .ci/busy_acceptance.py --runs 1 --make-test   # the whole `make test` once

It starts one busy-loop process per core (`--loops`), runs the command `--runs` times in a
row (every run, even after a failure, so the count of passes is honest), stops the loops, and prints
one line per run plus a summary: pass/fail, wall seconds, and /proc/loadavg before and after. Exit
status 0 only when every run passed. The network tests need root (`ip netns`); without it they skip,
and the summary says how many tests skipped.

Tests must never depend on timing, so none should fail here; a failure is a bug in the test (prove
the ordering with an event, a counter or a hook) or in the code, never a reason to add a sleep.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# "The network and serve tests": the two-namespace KV tests and every `serve` (supervisor) test.
SERVE_TESTS = sorted(str(path.relative_to(ROOT)) for path in ROOT.glob("tests/workers/test_serve_*.py"))
NETWORK_AND_SERVE = ["tests/network", *SERVE_TESTS]
# Spins one core; exits by itself once this script is gone (its parent changes), however it ended.
BUSY_LOOP = "\n".join(
    ["import os", "parent = os.getppid()", "while os.getppid() == parent:", "    for _ in range(10**6): pass"]
)


def loadavg() -> str:
    """The 1/5/15-minute load averages now ("?" off Linux)."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def start_loops(count: int) -> list[subprocess.Popen[bytes]]:
    """`count` busy-loop processes (one core each)."""
    return [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(count)]


def stop_loops(loops: list[subprocess.Popen[bytes]]) -> None:
    for loop in loops:
        loop.kill()
    for loop in loops:
        loop.wait()


def run_logged(command: list[str], log: Path) -> int:
    """Run `command` in its own process group with its output in `log`; its exit status.

    Interrupted (Ctrl-C, SIGTERM), the whole group gets SIGINT first, so pytest's fixtures stop the
    servers they started, and SIGKILL 30 s later.
    """
    with log.open("w") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            return process.wait()
        except BaseException:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            raise


def summary_of(output: str) -> str:
    """pytest's final line ("12 passed, 1 skipped in 80.1s"), or the last line of the output."""
    lines = [line.strip("= ") for line in output.splitlines() if line.strip()]
    found = [line for line in lines if re.search(r"\b(passed|failed|error|no tests ran)\b", line)]
    return (found or lines or ["(no output)"])[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="runs in a row (default 10)")
    parser.add_argument("--loops", type=int, default=os.cpu_count() or 2, help="busy loops (default: cores)")
    parser.add_argument("--make-test", action="store_true", help="run `make test` instead of pytest")
    parser.add_argument("--log-dir", type=Path, default=Path("/tmp/busy-acceptance"), help="one log per run")
    parser.add_argument("tests", nargs="*", help="pytest arguments (default: the network and serve tests)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.loops < 0:
        parser.error(f"--runs {args.runs} / --loops {args.loops}: need --runs >= 1 and --loops >= 0")
    if args.make_test:
        command = ["make", "test"]
    else:
        command = [str(ROOT / ".venv/bin/python"), "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        command += args.tests or NETWORK_AND_SERVE
    args.log_dir.mkdir(parents=True, exist_ok=True)
    # SIGTERM (a CI timeout) unwinds like Ctrl-C: subprocess.run kills the test run, `finally` the loops.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print(f"command: {' '.join(command)}\nbusy loops: {args.loops}; logs in {args.log_dir}", flush=True)
    loops = start_loops(args.loops)
    passed = 0
    try:
        for run in range(1, args.runs + 1):
            before, start = loadavg(), time.monotonic()
            log = args.log_dir / f"run-{run}.log"
            code = run_logged(command, log)
            wall = time.monotonic() - start
            passed += code == 0
            verdict = "PASS" if code == 0 else f"FAIL (exit {code}, see {log})"
            print(
                f"run {run}/{args.runs}: {verdict}; {summary_of(log.read_text())}; wall {wall:.0f} s; "
                f"load before {before}, after {loadavg()}",
                flush=True,
            )
    finally:
        stop_loops(loops)
    print(f"{passed}/{args.runs} runs passed with {args.loops} busy loops")
    return 0 if passed == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
