"""The contract between the operator and a native decode agent: the assignment ConfigMap and the Lease.

One module, imported by both sides (the agent depends on the operator package, never the reverse):
the operator writes one ConfigMap per assignment, labelled with the agent's name; the agent renews a
coordination.k8s.io Lease per namespace it serves, whose annotations say what it is and how each of
its workers is doing. Everything here is pure (no API calls).
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

# Bump when the ConfigMap's meaning changes; an agent refuses a protocol it does not speak.
ASSIGNMENT_PROTOCOL = 1
AGENT_LABEL = "hybridinference.dev/agent"  # on assignment ConfigMaps: the agent's name
PREFIX = "hybridinference.dev/"
# ConfigMap data keys.
DATA_PROTOCOL = "protocol"  # ASSIGNMENT_PROTOCOL as a string
DATA_OPERATOR_VERSION = "operatorVersion"  # shown in the agent's refusal
DATA_OWNER = "owner"  # "<namespace>/<name>" of the HybridInference
DATA_PORT = "port"  # the decode worker's HTTP port on the agent's machine
DATA_FLAGS = "flags.json"  # {"--flag": value} of `hybrid-inference decode`
# Lease annotation keys (each prefixed with PREFIX).
ANN_VERSION, ANN_ENGINE, ANN_DEVICE = "agent-version", "engine", "device"
ANN_ADDRESS, ANN_FREE_MEMORY, ANN_PROFILE = "address", "free-memory-bytes", "profile"
ANN_PROTOCOL, ANN_WORKERS, ANN_STATE = "assignment-protocol", "workers", "state"
ANN_DEVICE_PROFILE = "device-profile"  # a built-in planner device id (when there is no calibrated profile)
ANN_TLS_DIR = "tls-dir"  # folder of its TLS files (used when auto placement chooses it)


class WorkerPhase(StrEnum):
    """What the agent reports for one assignment."""

    STARTING = "starting"  # process started, /ready not yet true
    READY = "ready"  # serving: /ready answered 200
    RESTARTING = "restarting"  # exited; restarted after a backoff
    REFUSED = "refused"  # not started: `reason` says why (port taken, model missing, protocol)


@dataclass(frozen=True)
class WorkerReport:
    """One assignment as the agent's Lease reports it."""

    phase: WorkerPhase
    port: int = 0
    config: str = ""  # digest of the assignment the worker runs (a new one restarts it)
    pid: int = 0
    restarts: int = 0
    reason: str = ""  # CamelCase reason when refused or restarting
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        """Compact JSON form (empty fields left out)."""
        return {key: value for key, value in self.__dict__.items() if value not in ("", 0)}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> WorkerReport:
        """Parse; an unknown phase reads as STARTING (a newer agent's word for not-ready-yet)."""
        phase = raw.get("phase", "")
        known = phase in WorkerPhase._value2member_map_
        names = ("port", "config", "pid", "restarts", "reason", "message")
        fields = {key: raw[key] for key in names if key in raw}
        return cls(WorkerPhase(phase) if known else WorkerPhase.STARTING, **fields)


@dataclass(frozen=True)
class AgentLease:
    """What an agent's Lease says: identity, hardware, address, and its workers by owner."""

    name: str
    address: str = ""
    engine: str = ""
    device: str = ""
    version: str = ""
    state: str = ""  # "running" or "stopped" (a clean shutdown)
    free_memory_bytes: int = 0
    profile: dict[str, Any] = field(default_factory=dict)
    device_profile: str = ""
    tls_dir: str = ""  # where its TLS files are (the operator uses it when it chose the agent itself)
    renewed: datetime.datetime | None = None
    duration_s: int = 0
    workers: dict[str, WorkerReport] = field(default_factory=dict)  # "<ns>/<name>" -> report

    def expired(self, now: datetime.datetime) -> bool:
        """No renewal within the lease duration (or never renewed, or shut down cleanly)."""
        if self.renewed is None or self.state == "stopped":
            return True
        return now > self.renewed + datetime.timedelta(seconds=max(self.duration_s, 1))

    @classmethod
    def from_object(cls, lease: Mapping[str, Any]) -> AgentLease:
        """Parse a Lease body; malformed annotations read as absent (an old or foreign writer)."""
        meta, spec = lease.get("metadata", {}), lease.get("spec", {})
        ann = {k.removeprefix(PREFIX): v for k, v in (meta.get("annotations") or {}).items()}
        return cls(
            name=str(meta.get("name", "")),
            address=ann.get(ANN_ADDRESS, ""),
            engine=ann.get(ANN_ENGINE, ""),
            device=ann.get(ANN_DEVICE, ""),
            version=ann.get(ANN_VERSION, ""),
            state=ann.get(ANN_STATE, ""),
            free_memory_bytes=_int(ann.get(ANN_FREE_MEMORY)),
            profile=_json(ann.get(ANN_PROFILE), {}),
            device_profile=ann.get(ANN_DEVICE_PROFILE, ""),
            tls_dir=ann.get(ANN_TLS_DIR, ""),
            renewed=parse_time(spec.get("renewTime")),
            duration_s=_int(spec.get("leaseDurationSeconds")),
            workers={k: WorkerReport.from_json(v) for k, v in _json(ann.get(ANN_WORKERS), {}).items()},
        )


def assignment_digest(data: Mapping[str, str]) -> str:
    """Digest of an assignment ConfigMap's data: the operator and the agent compute the same one."""
    return hashlib.sha256(json.dumps(dict(data), sort_keys=True).encode()).hexdigest()[:16]


def lease_annotations(values: Mapping[str, Any]) -> dict[str, str]:
    """Annotation keys with PREFIX; dicts become compact JSON, everything else a string."""
    return {
        PREFIX + key: json.dumps(value, sort_keys=True) if isinstance(value, dict) else str(value)
        for key, value in values.items()
    }


def micro_time(moment: datetime.datetime) -> str:
    """A Lease MicroTime: `2026-01-02T03:04:05.123456Z`."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(raw: Any) -> datetime.datetime | None:
    """MicroTime or Time string -> aware datetime; None when absent or malformed."""
    if not isinstance(raw, str):
        return None
    try:
        return datetime.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None


def _int(raw: Any) -> int:
    try:
        return int(raw)
    except (TypeError, ValueError):
        return 0


def _json(raw: Any, default: dict[str, Any]) -> dict[str, Any]:
    try:
        value = json.loads(raw) if isinstance(raw, str) else default
    except json.JSONDecodeError:
        return default
    return value if isinstance(value, dict) else default
