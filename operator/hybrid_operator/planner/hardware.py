"""Hardware profiles: peak and sustained compute per dtype, memory bandwidth and size, with sources.

Built-in profiles live in `devices.yaml` next to this module; `hybrid-inference calibrate` writes
measured profiles (JSON) in the same shape, which `device_profile()` loads from a path.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from hybrid_workers.enums import CONCRETE_DTYPES

from hybrid_operator.planner.errors import PlannerError

DTYPES = tuple(CONCRETE_DTYPES)  # the rates a profile may list
# Keys of peak_tflops / sustained_tflops: the model dtypes, plus the fp8/fp4 tensor-core rates that
# fp8 / nvfp4 weights use where the device has them.
COMPUTE_KEYS = (*DTYPES, "fp8", "fp4")
# Share of memory held back from weights + KV by default, per kind: CUDA context, activations and
# allocator slack on GPUs (vLLM's default gpu_memory_utilization is 0.9); macOS lets the GPU wire about
# 75% of unified memory by default (iogpu.wired_limit_mb); the OS and the runtime on CPUs.
MEMORY_RESERVE = {"gpu": 0.10, "apple": 0.25, "cpu": 0.15}
_DATA = Path(__file__).with_name("devices.yaml")


@dataclass(frozen=True)
class DeviceProfile:
    """One machine as the planner sees it. Rates are per second; sustained = what a model reaches."""

    id: str  # profile id (`dgx-spark`) or the name a calibrated file gives
    name: str  # human-readable description
    kind: str  # gpu | apple | cpu
    memory_gb: float  # memory the model and KV cache can use, 1e9 bytes
    memory_gbps: float  # peak memory bandwidth, 1e9 bytes/s
    peak_tflops: Mapping[str, float]  # dtype -> peak dense TFLOP/s (spec sheet)
    sustained_tflops: Mapping[str, float]  # dtype -> dense TFLOP/s a prefill sustains
    sustained_memory_gbps: float  # bytes/s a batch-1 decode step streams, 1e9
    source: str  # where the numbers come from
    # Fixed cost per decoder layer per decode step (kernel launches, Python dispatch); measured by
    # `calibrate`, 0 for built-in accelerator profiles whose runtimes fuse or graph-capture kernels.
    layer_overhead_seconds: float = 0.0
    # dtype -> measured decode bandwidth (GB/s) where it differs by dtype (CPUs convert bf16/fp16 on
    # the fly); dtypes not listed use sustained_memory_gbps.
    decode_gbps: Mapping[str, float] = field(default_factory=dict)
    # Cached K/V bytes per second a decode step gets through (append + attention), when measured:
    # runtimes that copy the cache on append touch each byte more than once. None: read once at the
    # decode bandwidth (paged-attention runtimes).
    kv_gbps: float | None = None
    gpu_products: tuple[str, ...] = field(default=())  # token sequences of nvidia.com/gpu.product
    measured: bool = False  # True when the sustained numbers were measured on the machine
    memory_reserve: float = 0.10  # share of memory_gb not available to weights + KV (see MEMORY_RESERVE)

    @property
    def usable_memory_gb(self) -> float:
        """Memory weights and KV cache may take, 1e9 bytes."""
        return self.memory_gb * (1 - self.memory_reserve)

    def flops_per_second(self, dtype: str) -> float:
        """Sustained dense FLOP/s for `dtype`; PlannerError when the profile has no number for it."""
        if dtype not in self.sustained_tflops:
            raise PlannerError(
                f"device {self.id!r} has no compute rate for dtype {dtype!r}; "
                f"it has {', '.join(sorted(self.sustained_tflops))}"
            )
        return self.sustained_tflops[dtype] * 1e12

    def bytes_per_second(self, dtype: str) -> float:
        """Sustained decode memory bandwidth in bytes/s for weights and KV in `dtype`."""
        return self.decode_gbps.get(dtype, self.sustained_memory_gbps) * 1e9

    def kv_bytes_per_second(self, dtype: str) -> float:
        """Bytes/s at which a decode step gets through its cached K/V."""
        return self.kv_gbps * 1e9 if self.kv_gbps is not None else self.bytes_per_second(dtype)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form `calibrate` writes and `device_from_dict` reads."""
        return {
            "kind_of_profile": "device",
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "memory_gb": self.memory_gb,
            "memory_gbps": self.memory_gbps,
            "peak_tflops": dict(self.peak_tflops),
            "sustained_tflops": dict(self.sustained_tflops),
            "sustained_memory_gbps": self.sustained_memory_gbps,
            "layer_overhead_seconds": self.layer_overhead_seconds,
            "decode_gbps": dict(self.decode_gbps),
            "kv_gbps": self.kv_gbps,
            "source": self.source,
            "measured": self.measured,
            "memory_reserve": self.memory_reserve,
        }


@cache
def _builtin_table() -> tuple[dict[str, float], dict[str, DeviceProfile]]:
    raw = yaml.safe_load(_DATA.read_text())
    factors = {k: float(v) for k, v in raw["utilisation"].items()}
    devices = {d["id"]: device_from_dict(d, factors) for d in raw["devices"]}
    return factors, devices


def utilisation_factors() -> dict[str, float]:
    """The two stated utilisation factors (`compute`, `bandwidth`) built-in profiles are derived with."""
    return dict(_builtin_table()[0])


def builtin_devices() -> dict[str, DeviceProfile]:
    """Built-in profiles by id."""
    return dict(_builtin_table()[1])


def _positive(data: Mapping[str, Any], key: str, where: str) -> float:
    try:
        value = float(data[key])
    except KeyError:
        raise PlannerError(f"{where}: missing field {key!r}") from None
    except (TypeError, ValueError):
        raise PlannerError(f"{where}: field {key!r} = {data[key]!r} is not a number") from None
    if not value > 0:
        raise PlannerError(f"{where}: field {key!r} = {value} must be > 0")
    return value


def _rates(data: Mapping[str, Any], key: str, where: str) -> dict[str, float]:
    table = data.get(key)
    if not isinstance(table, Mapping) or not table:
        raise PlannerError(f"{where}: field {key!r} must map dtypes ({', '.join(DTYPES)}) to rates")
    unknown = sorted(set(table) - set(COMPUTE_KEYS))
    if unknown:
        raise PlannerError(f"{where}: {key} has unknown dtype {unknown[0]!r}; use {', '.join(COMPUTE_KEYS)}")
    return {dtype: _positive(table, dtype, f"{where}: {key}") for dtype in table}


def device_from_dict(data: Mapping[str, Any], factors: Mapping[str, float] | None = None) -> DeviceProfile:
    """A profile from its YAML/JSON form; sustained rates default to peak x the utilisation factors."""
    if not isinstance(data, Mapping):
        raise PlannerError(f"a device profile must be a mapping, got {type(data).__name__}")
    where = f"device profile {data.get('id', '?')!r}"
    factors = factors if factors is not None else utilisation_factors()
    peak = _rates(data, "peak_tflops", where)
    memory_gbps = _positive(data, "memory_gbps", where)
    if "sustained_tflops" in data:
        sustained = _rates(data, "sustained_tflops", where)
    else:
        sustained = {dtype: rate * factors["compute"] for dtype, rate in peak.items()}
    if "sustained_memory_gbps" in data:
        sustained_gbps = _positive(data, "sustained_memory_gbps", where)
    else:
        sustained_gbps = memory_gbps * factors["bandwidth"]
    kind = str(data.get("kind", "cpu"))
    reserve = float(data.get("memory_reserve", MEMORY_RESERVE.get(kind, 0.10)))
    if not 0 <= reserve < 1:
        raise PlannerError(f"{where}: field 'memory_reserve' = {reserve} must be in [0, 1)")
    return DeviceProfile(
        id=str(data.get("id") or "unnamed"),
        name=str(data.get("name", data.get("id", "unnamed"))),
        kind=kind,
        memory_gb=_positive(data, "memory_gb", where),
        memory_gbps=memory_gbps,
        peak_tflops=peak,
        sustained_tflops=sustained,
        sustained_memory_gbps=sustained_gbps,
        source=str(data.get("source", "unknown")),
        layer_overhead_seconds=float(data.get("layer_overhead_seconds", 0.0)),
        decode_gbps=_rates(data, "decode_gbps", where) if data.get("decode_gbps") else {},
        kv_gbps=_positive(data, "kv_gbps", where) if data.get("kv_gbps") is not None else None,
        gpu_products=tuple(str(p) for p in data.get("gpu_products", ())),
        measured=bool(data.get("measured", False)),
        memory_reserve=reserve,
    )


def read_profile_file(path: Path) -> dict[str, Any]:
    """The mapping in a JSON or YAML profile file; PlannerError naming the path when unreadable."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise PlannerError(f"cannot read profile file {str(path)!r}: {exc.strerror}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise PlannerError(f"profile file {str(path)!r} is not valid JSON/YAML: {exc}") from None
    if not isinstance(data, dict):
        raise PlannerError(f"profile file {str(path)!r} must hold a mapping, got {type(data).__name__}")
    return data


def device_profile(ref: str) -> DeviceProfile:
    """A built-in profile by id, or a profile file (`calibrate --out`) by path."""
    devices = builtin_devices()
    if ref in devices:
        return devices[ref]
    path = Path(ref)
    if path.suffix in (".json", ".yaml", ".yml") or path.exists():
        return device_from_dict(read_profile_file(path))
    raise PlannerError(
        f"unknown device {ref!r}; use a profile file from `hybrid-inference calibrate` or one of "
        f"{', '.join(sorted(devices))}"
    )
