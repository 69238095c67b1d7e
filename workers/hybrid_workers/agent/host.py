"""Facts about the agent's machine for its Lease: identity (address, engine, device, profile), memory."""

from __future__ import annotations

import json
import platform
import re
import socket
import subprocess
from typing import Any
from urllib.parse import urlsplit

from hybrid_workers.agent.config import AgentConfig
from hybrid_workers.agent.lease import Identity
from hybrid_workers.decode.engines import apple_silicon, resolve_engine
from hybrid_workers.enums import ComputeDevice, Engine
from hybrid_workers.errors import UserError


def route_address(server: str) -> str:
    """The local IP that routes to the API server (what the cluster sees; no packet is sent)."""
    parts = urlsplit(server)
    host, port = parts.hostname or "127.0.0.1", parts.port or 443
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect((host, port))
        return str(probe.getsockname()[0])


def free_memory_bytes() -> int:
    """Memory available to new processes (Linux MemAvailable; macOS free+inactive pages); 0: unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    if platform.system() == "Darwin":
        try:
            text = subprocess.run(["vm_stat"], capture_output=True, text=True, timeout=5).stdout
        except (OSError, subprocess.SubprocessError):
            return 0
        page = int(m[1]) if (m := re.search(r"page size of (\d+)", text)) else 16384
        pages = sum(int(m[1]) for m in re.finditer(r"Pages (?:free|inactive|speculative):\s+(\d+)", text))
        return pages * page
    return 0


def resolve_device(engine: Engine, device: ComputeDevice | None) -> ComputeDevice:
    """The device the engine computes on: metal for mlx, mps for torch on Apple silicon, else cpu
    (cuda only when asked: probing it would import torch)."""
    if device is not None:
        return device
    if engine == Engine.MLX:
        return ComputeDevice.METAL
    return ComputeDevice.MPS if apple_silicon() else ComputeDevice.CPU


def identity(config: AgentConfig, server: str) -> Identity:
    """What the agent announces: its address, engine, device and (if given) calibrated profile."""
    engine = resolve_engine(config.engine)
    profile: dict[str, Any] = {}
    if config.profile is not None:
        try:
            profile = json.loads(config.profile.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise UserError(f"--profile {config.profile}: not a profile JSON ({exc})") from None
    address = config.address or route_address(server)
    device = resolve_device(engine, config.device).value
    tls_dir = str(config.tls_dir) if config.tls_dir is not None else ""
    return Identity(config.name, address, engine.value, device, profile, config.device_profile or "", tls_dir)
