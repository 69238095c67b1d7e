"""The agent's settings: one frozen dataclass, checked once at start-up (errors name flag and fix)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from hybrid_workers.enums import ComputeDevice, Engine
from hybrid_workers.errors import UserError

NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True)
class AgentConfig:
    """What one agent process is: its name, credentials, namespaces, hardware and timing."""

    name: str  # its Lease's name in every namespace; decode.agent.name in the resources
    kubeconfig: Path  # kubeconfig of the agent's ServiceAccount
    namespaces: tuple[str, ...]  # where it is bound (one RoleBinding and one Lease each)
    address: str | None = None  # advertised LAN IP; None: the one that routes to the API server
    listen_host: str = "0.0.0.0"  # where workers listen
    engine: Engine = Engine.AUTO
    device: ComputeDevice | None = None  # None: detected (metal for mlx, mps on Apple silicon)
    profile: Path | None = None  # `hybrid-inference calibrate --out` file, announced in the Lease
    device_profile: str | None = None  # or a built-in planner device id (e.g. m3-ultra)
    tls_dir: Path | None = None  # tls.crt, tls.key, ca.crt: announced for assignments auto placement makes
    lease_seconds: int = 30  # Lease duration; the operator calls the agent lost after this silence
    renew_seconds: float = 10.0  # heartbeat period (well under lease_seconds)
    watch_seconds: int = 60  # each watch is re-listed after this long (catches missed events)
    max_backoff_seconds: float = 30.0  # longest wait before restarting a crashed worker

    def __post_init__(self) -> None:
        if not NAME.match(self.name) or len(self.name) > 63:
            raise UserError(f"--name {self.name!r}: must be a DNS label (a-z, 0-9, '-'), e.g. mac-studio")
        if not self.namespaces:
            raise UserError("--namespace: give at least one namespace the agent is bound in")
        if self.address is not None:
            try:
                ipaddress.ip_address(self.address)
            except ValueError:
                raise UserError(f"--address {self.address!r}: not an IP address, e.g. 192.168.1.20") from None
        if self.lease_seconds < 2 or not 0 < self.renew_seconds < self.lease_seconds:
            raise UserError(
                f"--lease-seconds {self.lease_seconds} / --renew-seconds {self.renew_seconds}: "
                "need lease ≥ 2 and 0 < renew < lease (e.g. 30 and 10)"
            )
        if self.tls_dir is not None:
            missing = [n for n in ("tls.crt", "tls.key", "ca.crt") if not (self.tls_dir / n).is_file()]
            if missing:
                raise UserError(
                    f"--tls-dir {self.tls_dir}: no {', '.join(missing)} there (see docs/nodes.md)"
                )
        if self.profile is not None and not self.profile.is_file():
            raise UserError(f"--profile {self.profile}: no such file (write one with `calibrate --out`)")
