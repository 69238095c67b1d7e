"""The agent as a macOS launchd service: the property list, written and (on macOS) loaded.

KeepAlive restarts the agent whenever it exits (ThrottleInterval spaces the restarts); launchd stops
the agent's whole process group with it, so its decode workers never outlive it.
"""

from __future__ import annotations

import plistlib
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

LABEL_PREFIX = "dev.hybridinference.agent"


def plist(label: str, program_arguments: Sequence[str], log_dir: Path, env: dict[str, str]) -> dict[str, Any]:
    """The launchd job: run at load, keep alive, stdout/stderr to log files."""
    return {
        "Label": label,
        "ProgramArguments": list(program_arguments),
        "RunAtLoad": True,
        "KeepAlive": True,
        "ThrottleInterval": 10,  # seconds between restarts after an exit
        "ProcessType": "Interactive",  # no App Nap throttling of a latency-bound server
        "StandardOutPath": str(log_dir / f"{label}.out.log"),
        "StandardErrorPath": str(log_dir / f"{label}.err.log"),
        "EnvironmentVariables": dict(env),
    }


def write(path: Path, job: dict[str, Any]) -> Path:
    """Write the plist (XML) to `path`, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(plistlib.dumps(job))
    return path


def load_commands(path: Path, label: str) -> list[list[str]]:
    """launchctl commands that (re)load the job in the user's GUI domain."""
    domain = f"gui/{_uid()}"
    return [["launchctl", "bootout", f"{domain}/{label}"], ["launchctl", "bootstrap", domain, str(path)]]


def load(path: Path, label: str) -> None:
    """Reload the job with launchctl (macOS only; the first bootout fails harmlessly if not loaded)."""
    if sys.platform != "darwin":
        raise OSError("launchctl exists only on macOS; copy the plist to the Mac and load it there")
    first, second = load_commands(path, label)
    subprocess.run(first, check=False, capture_output=True)
    subprocess.run(second, check=True)


def _uid() -> int:
    import os

    return os.getuid()
