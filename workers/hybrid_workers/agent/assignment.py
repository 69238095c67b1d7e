"""An assignment ConfigMap -> the `hybrid-inference decode` command line, or a refusal with a reason.

Refusals are checked before anything starts (nothing half-started): a protocol this agent does not
speak, a flag the decode command does not have, a model folder or TLS file missing on this machine.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from hybrid_operator.agent_contract import (
    ASSIGNMENT_PROTOCOL,
    DATA_FLAGS,
    DATA_OPERATOR_VERSION,
    DATA_OWNER,
    DATA_PORT,
    DATA_PROTOCOL,
    assignment_digest,
)

from hybrid_workers import __version__
from hybrid_workers.enums import ComputeDevice, Engine, env_name

PATH_FLAGS = ("--tls-cert", "--tls-key", "--tls-ca")  # files that must exist on this machine


class Refusal(Exception):
    """The agent will not run an assignment; `reason` is CamelCase, the message says what to do."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Assignment:
    """One decode worker the operator wants on this agent."""

    owner: str  # "<namespace>/<HybridInference name>"
    port: int  # its HTTP port on this machine
    flags: dict[str, str]  # `hybrid-inference decode` flags the operator rendered
    digest: str  # assignment_digest of the ConfigMap data (reported back in the Lease)


@cache
def decode_flag_names() -> frozenset[str]:
    """Every option of `hybrid-inference decode`, read from its own parser (no torch import)."""
    from hybrid_workers.cli import decode

    parser = argparse.ArgumentParser()
    decode.register(parser.add_subparsers())
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return frozenset(s for action in sub.choices["decode"]._actions for s in action.option_strings)


def parse(configmap: Mapping[str, Any]) -> Assignment:
    """Read an assignment ConfigMap; Refusal when this agent cannot run it as written."""
    meta, data = configmap.get("metadata", {}), dict(configmap.get("data") or {})
    namespace = str(meta.get("namespace", "default"))
    owner = f"{namespace}/{str(data.get(DATA_OWNER, '')).rpartition('/')[2] or meta.get('name')}"
    digest = assignment_digest(data)
    protocol = str(data.get(DATA_PROTOCOL, ""))
    if protocol != str(ASSIGNMENT_PROTOCOL):
        raise Refusal(
            "IncompatibleOperator",
            f"assignment protocol {protocol or '?'} from operator {data.get(DATA_OPERATOR_VERSION, '?')}; "
            f"agent {__version__} speaks protocol {ASSIGNMENT_PROTOCOL}: upgrade the older of the two",
        )
    try:
        flags = json.loads(data.get(DATA_FLAGS, ""))
        port = int(data.get(DATA_PORT, ""))
    except (ValueError, TypeError):
        raise Refusal(
            "MalformedAssignment", f"ConfigMap {meta.get('name')}: bad {DATA_FLAGS} or port"
        ) from None
    unknown = sorted(set(flags) - decode_flag_names())
    if unknown:
        raise Refusal("UnknownFlag", f"decode has no flag {', '.join(unknown)}: upgrade the agent")
    return Assignment(owner, port, {k: str(v) for k, v in flags.items()}, digest)


def check_files(assignment: Assignment, agent: str) -> None:
    """Refusal when the model folder or a TLS file named by the assignment is missing here."""
    model = assignment.flags.get("--model", "")
    if model.startswith(("/", "~")) and not Path(model).expanduser().is_dir():
        raise Refusal(
            "ModelMissing",
            f"model folder {model} not found on agent {agent}: "
            "copy the model there or fix decode.agent.modelPath",
        )
    for flag in PATH_FLAGS:
        value = assignment.flags.get(flag)
        if value and not Path(value).expanduser().is_file():
            raise Refusal(
                "TLSFileMissing",
                f"{flag} {value} not found on agent {agent}: "
                "put tls.crt, tls.key and ca.crt in decode.agent.tlsDir",
            )


def command(assignment: Assignment, listen_host: str, engine: Engine, device: ComputeDevice) -> list[str]:
    """argv of the decode worker: the operator's flags, paths expanded, plus this machine's choices."""
    argv = [sys.executable, "-m", "hybrid_workers", "decode"]
    for flag, value in sorted(assignment.flags.items()):
        argv += [flag, str(Path(value).expanduser()) if value.startswith("~") else value]
    argv += ["--host", listen_host, "--engine", engine.value]
    if engine == Engine.TORCH and device != ComputeDevice.METAL:
        argv += ["--device", device.value]
    return argv


def worker_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The agent's environment minus variables mirroring decode flags (the argv says everything)."""
    mirrored = {env_name(flag) for flag in decode_flag_names() if flag.startswith("--")}
    return {k: v for k, v in environ.items() if k not in mirrored} | {"PYTHONUNBUFFERED": "1"}
