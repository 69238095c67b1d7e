"""The agent's heartbeat: one Lease per namespace it serves, renewed with what it is and how its
workers are doing (the operator reads it; hybrid_operator.agent_contract is the shared vocabulary)."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hybrid_operator.agent_contract import (
    ANN_ADDRESS,
    ANN_DEVICE,
    ANN_DEVICE_PROFILE,
    ANN_ENGINE,
    ANN_FREE_MEMORY,
    ANN_PROFILE,
    ANN_PROTOCOL,
    ANN_STATE,
    ANN_TLS_DIR,
    ANN_VERSION,
    ANN_WORKERS,
    ASSIGNMENT_PROTOCOL,
    WorkerReport,
    lease_annotations,
    micro_time,
)

from hybrid_workers import __version__

LEASE_API = "coordination.k8s.io/v1"


@dataclass(frozen=True)
class Identity:
    """What the agent announces about itself (the same in every namespace)."""

    name: str
    address: str
    engine: str
    device: str
    profile: dict[str, Any] = field(default_factory=dict)
    device_profile: str = ""  # built-in planner device id, e.g. m3-ultra
    tls_dir: str = ""  # folder with tls.crt, tls.key, ca.crt (for assignments auto placement makes)


def lease_patch(
    identity: Identity,
    duration_s: int,
    workers: Mapping[str, WorkerReport],
    free_memory: int,
    state: str,
    now: datetime.datetime,
) -> dict[str, Any]:
    """The merge patch that renews the Lease and replaces its annotations' values."""
    values: dict[str, Any] = {
        ANN_VERSION: __version__,
        ANN_ENGINE: identity.engine,
        ANN_DEVICE: identity.device,
        ANN_ADDRESS: identity.address,
        ANN_FREE_MEMORY: free_memory,
        ANN_PROTOCOL: ASSIGNMENT_PROTOCOL,
        ANN_STATE: state,
        ANN_WORKERS: {owner: report.to_json() for owner, report in sorted(workers.items())},
    }
    annotations = lease_annotations(values)
    if identity.profile:
        annotations |= lease_annotations({ANN_PROFILE: identity.profile})
    if identity.device_profile:
        annotations |= lease_annotations({ANN_DEVICE_PROFILE: identity.device_profile})
    if identity.tls_dir:
        annotations |= lease_annotations({ANN_TLS_DIR: identity.tls_dir})
    return {
        "metadata": {"annotations": annotations},
        "spec": {
            "holderIdentity": identity.name,
            "leaseDurationSeconds": duration_s,
            "renewTime": micro_time(now),
        },
    }
