"""When `serve` restarts a crashed worker, and when it gives up: a crash window with bounded backoff.

A worker that exits on its own after start-up is restarted after a delay that doubles with each
crash inside the window (0.5 s, 1 s, 2 s, ... at most 8 s). One crash more than `max_restarts`
within `window_s` seconds means the worker cannot stay up (a broken model file, a full disk, an
out-of-memory loop): `serve` gives up and exits with that worker's exit code. Crashes older than the
window are forgotten, so a worker that crashes once a day is restarted forever.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from hybrid_workers.errors import UserError
from hybrid_workers.supervisor import POLL_SECONDS, Child, ExitCode, SessionEnd, Supervisor, describe_status

DEFAULT_MAX_RESTARTS = 5
DEFAULT_WINDOW_S = 60.0


@dataclass(frozen=True)
class RestartPolicy:
    """How often a worker may crash and be restarted (documented in docs/operations.md)."""

    max_restarts: int = DEFAULT_MAX_RESTARTS  # restarts allowed within the window; 0: never restart
    window_s: float = DEFAULT_WINDOW_S  # seconds a crash is remembered
    backoff_s: float = 0.5  # delay before the first restart; doubles per crash in the window
    max_backoff_s: float = 8.0

    def __post_init__(self) -> None:
        if self.max_restarts < 0:
            raise UserError(f"--max-restarts {self.max_restarts}: must be 0 (never restart) or more")
        if self.window_s <= 0:
            raise UserError(f"--restart-window {self.window_s}: must be greater than 0 seconds")


class CrashLog:
    """The crash times of one worker (monotonic seconds) and what to do about the next one."""

    def __init__(self, policy: RestartPolicy) -> None:
        self.policy = policy
        self._times: collections.deque[float] = collections.deque()

    @property
    def recent(self) -> int:
        """Crashes within the window, as of the last call to `crashed`."""
        return len(self._times)

    def crashed(self, now: float) -> float | None:
        """Record a crash at `now`: the delay before restarting, or None to give up."""
        while self._times and now - self._times[0] > self.policy.window_s:
            self._times.popleft()
        self._times.append(now)
        count = len(self._times)
        if count > self.policy.max_restarts:
            return None
        return float(min(self.policy.backoff_s * 2 ** (count - 1), self.policy.max_backoff_s))


def supervise(
    supervisor: Supervisor,
    policy: RestartPolicy,
    say: Callable[[str], None],
    is_back: Mapping[str, Callable[[], bool]] | None = None,
) -> SessionEnd:
    """Like Supervisor.run, but an exited child is restarted after the policy's delay while the others
    keep running; `say` is told each crash, restart and return (when `is_back[name]()` turns true).
    Ends on a stop request (STOPPED) or when a child crashed too often (its exit code)."""
    return _Restarter(supervisor, policy, say, is_back or {}).run()


class _Restarter:
    """The supervision loop with restarts (see Supervisor.run)."""

    def __init__(
        self,
        supervisor: Supervisor,
        policy: RestartPolicy,
        say: Callable[[str], None],
        is_back: Mapping[str, Callable[[], bool]],
    ) -> None:
        self.supervisor, self.policy, self.say, self.is_back = supervisor, policy, say, is_back
        self.crashes = {child.name: CrashLog(policy) for child in supervisor.children}
        self.restart_at: dict[str, float] = {}  # child name -> when to start it again
        self.coming_back: set[str] = set()  # restarted, not yet announced as back

    def run(self) -> SessionEnd:
        while not self.supervisor.stop_requested.is_set():
            for child in self.supervisor.children:
                if (outcome := self._step(child, time.monotonic())) is not None:
                    return outcome
            self.supervisor.stop_requested.wait(POLL_SECONDS)
        return SessionEnd(ExitCode.STOPPED)

    def _step(self, child: Child, now: float) -> SessionEnd | None:
        name = child.name
        if name in self.restart_at:
            if now >= self.restart_at[name]:
                del self.restart_at[name]
                child.restart()
                self.coming_back.add(name)
                self.say(f"{name} worker pid {child.pid}: restarted")
            return None
        status = child.returncode()
        if status is None:
            if name in self.coming_back and self.is_back.get(name, lambda: True)():
                self.coming_back.discard(name)
                self.say(f"{name} worker is back (pid {child.pid})")
            return None
        self.coming_back.discard(name)
        crashes = self.crashes[name]
        delay = crashes.crashed(now)
        if delay is None:
            return SessionEnd(child.spec.exit_code, child, status, crashes.recent)
        self.say(
            f"the {name} worker {describe_status(status)}; restarting it in {delay:g} s (crash "
            f"{crashes.recent} of {self.policy.max_restarts} restarted within {self.policy.window_s:g} s)"
        )
        self.restart_at[name] = now + delay
        return None
