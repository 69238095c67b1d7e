"""Engine profiles: how much of a device's peak an inference engine reaches, and what it costs per step.

A device profile (`devices.yaml`) holds hardware facts: peak FLOP/s per precision, peak memory
bandwidth, memory size. What a request gets out of them depends on the software: the GEMM kernels'
share of the compute peak, the attention kernels' share (attention is not a GEMM), the share of peak
bandwidth a batch-1 decode streams, fixed costs per step and per layer (launches, Python, graph
building), and the precision quantised weights are multiplied at. `engines.yaml` holds these per
(engine, compute device) with their sources; `with_engine` turns a device profile into the rates the
roofline uses.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from hybrid_workers.enums import ComputeDevice, RuntimeEngine

from hybrid_operator.planner.errors import PlannerError

if TYPE_CHECKING:
    from hybrid_operator.planner.hardware import DeviceProfile

_DATA = Path(__file__).with_name("engines.yaml")
# `auto`: what this project's workers run on each kind of device.
DEFAULT_ENGINE = {"gpu": RuntimeEngine.TORCH, "apple": RuntimeEngine.MLX, "cpu": RuntimeEngine.TORCH}
# Measured (calibrated) profiles are measured with torch: their rates are torch's on this device.
MEASURED_WITH = {"gpu": ComputeDevice.CUDA, "apple": ComputeDevice.MPS, "cpu": ComputeDevice.CPU}
# The compute devices each kind of device profile offers.
KIND_DEVICES = {
    "gpu": (ComputeDevice.CUDA,),
    "apple": (ComputeDevice.METAL, ComputeDevice.MPS),
    "cpu": (ComputeDevice.CPU,),
}
# Quantised prefill precision: `dtype` = the model dtype's rate; else a peak_tflops key.
QUANTISED_PRECISIONS = ("dtype", "float16", "int8")


@dataclass(frozen=True)
class EngineProfile:
    """One (engine, compute device) pair, e.g. ("llama.cpp", "metal") or ("vllm", "cuda")."""

    engine: str  # RuntimeEngine value (not auto)
    device: str  # ComputeDevice value
    compute_efficiency: float  # prefill GEMM FLOP/s / peak of the precision they run at
    attention_efficiency: float  # attention (QK^T, AV) FLOP/s / peak of the model dtype
    bandwidth_efficiency: float  # bytes/s a batch-1 decode step streams / peak memory bandwidth
    step_overhead_seconds: float  # fixed cost per forward (decode step or prefill): sampling, sync
    layer_overhead_seconds: float  # fixed cost per decoder layer per forward (kernel dispatch)
    quantised_prefill: str  # precision GGUF/MLX-quantised weights are multiplied at (QUANTISED_PRECISIONS)
    quantised_efficiency: float  # that matmul's FLOP/s / the precision's peak
    source: str  # where each number comes from
    # Narrowest hidden size at which prefill matmuls reach compute_efficiency; narrower layers get
    # proportionally less (0: no such limit).
    full_width: int = 0

    @property
    def key(self) -> str:
        """`engine/device`, as plan prints it and profiles record it."""
        return f"{self.engine}/{self.device}"


_FRACTIONS = ("compute_efficiency", "attention_efficiency", "bandwidth_efficiency", "quantised_efficiency")


def _profile(raw: dict[str, Any]) -> EngineProfile:
    where = f"engines.yaml entry {raw.get('engine')}/{raw.get('device')}"
    RuntimeEngine(raw["engine"]), ComputeDevice(raw["device"])  # closed choices; ValueError names it
    for name in _FRACTIONS:
        if not 0 < float(raw[name]) <= 1:
            raise PlannerError(f"{where}: {name} = {raw[name]} must be in (0, 1]")
    if int(raw.get("full_width", 0)) < 0:
        raise PlannerError(f"{where}: full_width = {raw['full_width']} must be >= 0")
    if raw["quantised_prefill"] not in QUANTISED_PRECISIONS:
        raise PlannerError(f"{where}: quantised_prefill must be one of {', '.join(QUANTISED_PRECISIONS)}")
    return EngineProfile(**raw)


@cache
def engine_profiles() -> dict[tuple[str, str], EngineProfile]:
    """The built-in profiles by (engine, compute device)."""
    return {(p.engine, p.device): p for p in map(_profile, yaml.safe_load(_DATA.read_text())["engines"])}


def engine_profile(engine: str, device: str) -> EngineProfile:
    """The profile of `engine` on `device`; PlannerError naming the known pairs otherwise."""
    profiles = engine_profiles()
    if (engine, device) not in profiles:
        known = ", ".join(f"{e}/{d}" for e, d in sorted(profiles))
        raise PlannerError(f"engine {engine!r} on device {device!r}: no profile; known: {known}")
    return profiles[(engine, device)]


def compute_device(engine: str, kind: str) -> str:
    """What `engine` computes on in a device of `kind`: Apple GPUs are `mps` to torch, `metal` to the
    Metal-native engines; NVIDIA GPUs are `cuda`; CPUs `cpu`."""
    if kind == "apple":
        return ComputeDevice.MPS if engine == RuntimeEngine.TORCH else ComputeDevice.METAL
    return ComputeDevice.CUDA if kind == "gpu" else ComputeDevice.CPU


def resolve_engine(engine: str, kind: str) -> EngineProfile:
    """The profile `engine` (or `auto`) has on a device of `kind`; PlannerError when it has none."""
    name = DEFAULT_ENGINE.get(kind, RuntimeEngine.TORCH) if engine == RuntimeEngine.AUTO else engine
    if name not in RuntimeEngine._value2member_map_:
        raise PlannerError(f"unknown engine {engine!r}; use one of {', '.join(RuntimeEngine)}")
    device = compute_device(name, kind)
    if (name, device) not in engine_profiles():
        others = sorted(e for e, d in engine_profiles() if d == device)
        raise PlannerError(
            f"engine {name} has no profile for {device} ({kind} devices); engines there: {', '.join(others)}"
        )
    return engine_profile(name, device)


def _quantised_tflops(peak: dict[str, float], engine: EngineProfile) -> dict[str, float]:
    """Model dtype -> sustained FLOP/s of matmuls on dequantise-on-the-fly weights."""
    fixed = engine.quantised_prefill
    if fixed != "dtype" and fixed in peak:  # a fixed precision (llama.cpp's int8 MMQ on CUDA)
        return {dtype: peak[fixed] * engine.quantised_efficiency for dtype in peak}
    return {dtype: rate * engine.quantised_efficiency for dtype, rate in peak.items()}


def with_engine(profile: DeviceProfile, engine: str = "auto", device: str | None = None) -> DeviceProfile:
    """`profile` as `engine` runs on it (`device`: its compute device when not the usual one).

    Built-in profiles: sustained rates = peak x the engine's efficiencies, overheads the engine's.
    Measured profiles (`calibrate`, torch): their rates scaled by this engine's efficiency relative to
    the engine they were measured or last resolved with (attention: its measured rate where the file
    has one, else the GEMM rate x the engine's attention/GEMM ratio); the measured per-layer overhead
    and per-step overheads are kept (what this machine's dispatch and decode loop cost).
    """
    if device is not None and device not in KIND_DEVICES.get(profile.kind, (device,)):
        offered = ", ".join(KIND_DEVICES[profile.kind])
        raise PlannerError(
            f"{profile.id} computes on {offered} ({profile.kind} device); it cannot run {engine}/{device}"
        )
    target = resolve_engine(engine, profile.kind) if device is None else engine_profile(engine, device)
    if not profile.measured_with:
        peak = {key: rate for key, rate in profile.peak_tflops.items()}
        return dataclasses.replace(
            profile,
            engine=target.key,
            sustained_tflops={k: rate * target.compute_efficiency for k, rate in peak.items()},
            attention_tflops={k: rate * target.attention_efficiency for k, rate in peak.items()},
            quantised_tflops=_quantised_tflops(peak, target),
            sustained_memory_gbps=profile.memory_gbps * target.bandwidth_efficiency,
            step_overhead_seconds=target.step_overhead_seconds,
            layer_overhead_seconds=target.layer_overhead_seconds,
            full_width=target.full_width,
        )
    current = engine_profile(*(profile.engine or profile.measured_with).split("/"))
    compute = target.compute_efficiency / current.compute_efficiency
    bandwidth = target.bandwidth_efficiency / current.bandwidth_efficiency
    attention = target.attention_efficiency / current.attention_efficiency
    gemm = {k: rate * compute for k, rate in profile.sustained_tflops.items()}
    return dataclasses.replace(
        profile,
        engine=target.key,
        sustained_tflops=gemm,
        attention_tflops={
            k: profile.attention_tflops[k] * attention
            if k in profile.attention_tflops
            else r * target.attention_efficiency / target.compute_efficiency
            for k, r in gemm.items()
        },
        quantised_tflops={
            k: r * target.quantised_efficiency / target.compute_efficiency for k, r in gemm.items()
        },
        sustained_memory_gbps=profile.sustained_memory_gbps * bandwidth,
        decode_gbps={k: gbps * bandwidth for k, gbps in profile.decode_gbps.items()},
        kv_gbps=profile.kv_gbps * bandwidth if profile.kv_gbps is not None else None,
    )
