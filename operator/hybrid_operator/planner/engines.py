"""Decode engine factors: the share of a device profile's decode bandwidth an engine reaches on it.

A device profile says what a Metal-native (Apple) or cuBLAS (NVIDIA) runtime streams per second at
batch 1; torch's MPS backend on the same Mac reaches about half of it, MLX all of it. `engines.yaml`
holds the factors with their public sources; `with_engine` applies one to a device profile.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

from hybrid_operator.planner.errors import PlannerError
from hybrid_operator.planner.hardware import DeviceProfile

_DATA = Path(__file__).with_name("engines.yaml")


@dataclass(frozen=True)
class EngineProfile:
    """One (engine, compute device) pair, e.g. ("mlx", "metal") or ("torch", "mps")."""

    engine: str  # torch | mlx (hybrid_workers.enums.Engine)
    device: str  # cpu | cuda | mps | metal (hybrid_workers.enums.ComputeDevice)
    decode_factor: float  # engine decode tokens/s / the device profile's, same model, batch 1
    source: str  # where the number comes from


@cache
def engine_profiles() -> dict[tuple[str, str], EngineProfile]:
    """The built-in factors by (engine, device)."""
    raw = yaml.safe_load(_DATA.read_text())["engines"]
    return {(e["engine"], e["device"]): EngineProfile(**e) for e in raw}


def engine_profile(engine: str, device: str) -> EngineProfile:
    """The factor of `engine` on `device`; PlannerError naming the known pairs otherwise."""
    profiles = engine_profiles()
    if (engine, device) not in profiles:
        known = ", ".join(f"{e}/{d}" for e, d in sorted(profiles))
        raise PlannerError(f"engine {engine!r} on device {device!r}: no profile; known: {known}")
    return profiles[(engine, device)]


def with_engine(profile: DeviceProfile, engine: str, device: str) -> DeviceProfile:
    """`profile` as `engine` on `device` decodes on it: decode bandwidths scaled by the engine factor."""
    factor = engine_profile(engine, device).decode_factor
    return dataclasses.replace(
        profile,
        id=f"{profile.id}+{engine}-{device}",
        sustained_memory_gbps=profile.sustained_memory_gbps * factor,
        decode_gbps={dtype: gbps * factor for dtype, gbps in profile.decode_gbps.items()},
        kv_gbps=profile.kv_gbps * factor if profile.kv_gbps is not None else None,
    )
