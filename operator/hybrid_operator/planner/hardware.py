"""Hardware profiles: peak compute per precision, memory bandwidth and size, with sources.

Built-in profiles live in `devices.yaml` next to this module and hold hardware facts only; the
sustained rates and overheads a request sees come from the engine that runs on the device
(`engines.py`, applied on load: `auto` unless told otherwise). `hybrid-inference calibrate` writes
measured profiles (JSON) in the same shape, with measured sustained rates, which `device_profile()`
loads from a path.
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

from hybrid_operator.planner.engines import MEASURED_WITH, engine_profile, with_engine
from hybrid_operator.planner.errors import PlannerError

DTYPES = tuple(CONCRETE_DTYPES)  # the rates a profile may list
# Keys of peak_tflops / sustained_tflops: the model dtypes, plus the fp8/fp4 tensor-core rates that
# fp8 / nvfp4 weights use where the device has them, and the int8 tensor-core rate (llama.cpp's
# quantised matmuls on CUDA).
COMPUTE_KEYS = (*DTYPES, "fp8", "fp4", "int8")
# Share of memory held back from weights + KV by default, per kind: CUDA context, activations and
# allocator slack on GPUs (vLLM's default gpu_memory_utilization is 0.9); macOS lets the GPU wire about
# 75% of unified memory by default (iogpu.wired_limit_mb); the OS and the runtime on CPUs.
MEMORY_RESERVE = {"gpu": 0.10, "apple": 0.25, "cpu": 0.15}
_DATA = Path(__file__).with_name("devices.yaml")


@dataclass(frozen=True)
class DeviceProfile:
    """One machine as the planner sees it, as one engine runs on it. Rates are per second; sustained =
    what a model reaches (peak x the engine's efficiencies, or measured)."""

    id: str  # profile id (`dgx-spark`) or the name a calibrated file gives
    name: str  # human-readable description
    kind: str  # gpu | apple | cpu
    memory_gb: float  # memory the model and KV cache can use, 1e9 bytes
    memory_gbps: float  # peak memory bandwidth, 1e9 bytes/s
    peak_tflops: Mapping[str, float]  # dtype -> peak dense TFLOP/s (spec sheet)
    sustained_tflops: Mapping[str, float]  # dtype -> dense TFLOP/s a prefill sustains
    sustained_memory_gbps: float  # bytes/s a batch-1 decode step streams, 1e9
    source: str  # where the numbers come from
    # Fixed cost per decoder layer per forward (kernel launches, Python dispatch): the engine's, or
    # measured by `calibrate`.
    layer_overhead_seconds: float = 0.0
    # Fixed cost per forward outside the decoder layers (embedding, logits, sampling, sync): the
    # engine's, or measured by `calibrate` (then kept for any engine, like the per-layer one).
    step_overhead_seconds: float = 0.0
    # dtype -> FLOP/s of attention's score and mix products (not GEMM-efficient); absent: sustained.
    attention_tflops: Mapping[str, float] = field(default_factory=dict)
    # dtype -> FLOP/s of prefill matmuls on dequantise-on-the-fly weights (GGUF, MLX quants).
    quantised_tflops: Mapping[str, float] = field(default_factory=dict)
    engine: str = ""  # the engine the rates are for, `engine/compute-device` ("" before one is applied)
    # `engine/device` the sustained rates in the file were measured with ("" = derived from peaks).
    measured_with: str = ""
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
    # The engine's narrowest full-rate hidden size (engines.py); 0 for measured profiles, whose rates
    # come from the planned shape's own layers.
    full_width: int = 0

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

    def attention_flops_per_second(self, dtype: str) -> float:
        """Sustained FLOP/s of attention's score and mix products in `dtype`."""
        rate = self.attention_tflops.get(dtype)
        return rate * 1e12 if rate is not None else self.flops_per_second(dtype)

    def bytes_per_second(self, dtype: str) -> float:
        """Sustained decode memory bandwidth in bytes/s for weights and KV in `dtype`."""
        return self.decode_gbps.get(dtype, self.sustained_memory_gbps) * 1e9

    def kv_bytes_per_second(self, dtype: str) -> float:
        """Bytes/s at which a decode step gets through its cached K/V."""
        return self.kv_gbps * 1e9 if self.kv_gbps is not None else self.bytes_per_second(dtype)

    def _measured_rates(self) -> dict[str, Any]:
        return {
            "measured_with": self.measured_with,
            "sustained_tflops": dict(self.sustained_tflops),
            "attention_tflops": dict(self.attention_tflops),
            "sustained_memory_gbps": self.sustained_memory_gbps,
            "layer_overhead_seconds": self.layer_overhead_seconds,
            "step_overhead_seconds": self.step_overhead_seconds,
            "decode_gbps": dict(self.decode_gbps),
            "kv_gbps": self.kv_gbps,
        }

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
            **(self._measured_rates() if self.measured_with else {}),
            "engine": self.engine,
            "source": self.source,
            "measured": self.measured,
            "memory_reserve": self.memory_reserve,
        }


@cache
def _builtin_table() -> dict[str, DeviceProfile]:
    return {d["id"]: device_from_dict(d) for d in yaml.safe_load(_DATA.read_text())["devices"]}


def builtin_devices() -> dict[str, DeviceProfile]:
    """Built-in profiles by id, as their `auto` engine runs on them."""
    return dict(_builtin_table())


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


def _seconds(data: Mapping[str, Any], key: str, where: str) -> float:
    """An optional overhead field: 0 when absent, PlannerError unless a number >= 0."""
    if key not in data:
        return 0.0
    try:
        value = float(data[key])
    except (TypeError, ValueError):
        raise PlannerError(f"{where}: field {key!r} = {data[key]!r} is not a number") from None
    if not value >= 0:
        raise PlannerError(f"{where}: field {key!r} = {value} must be >= 0")
    return value


def _rates(data: Mapping[str, Any], key: str, where: str) -> dict[str, float]:
    table = data.get(key)
    if not isinstance(table, Mapping) or not table:
        raise PlannerError(f"{where}: field {key!r} must map dtypes ({', '.join(DTYPES)}) to rates")
    unknown = sorted(set(table) - set(COMPUTE_KEYS))
    if unknown:
        raise PlannerError(f"{where}: {key} has unknown dtype {unknown[0]!r}; use {', '.join(COMPUTE_KEYS)}")
    return {dtype: _positive(table, dtype, f"{where}: {key}") for dtype in table}


def _measured_with(data: Mapping[str, Any], kind: str, where: str) -> str:
    """`engine/device` a profile's own sustained rates describe ("" when it gives none)."""
    if "sustained_tflops" not in data:
        return ""
    key = str(data.get("measured_with") or f"torch/{MEASURED_WITH.get(kind, 'cpu')}")
    if "/" not in key:
        raise PlannerError(f"{where}: measured_with {key!r} must be engine/device, e.g. torch/cpu")
    engine_profile(*key.split("/", 1))  # a known pair, or PlannerError naming them
    return key


def device_from_dict(data: Mapping[str, Any], engine: str | None = None) -> DeviceProfile:
    """A profile from its YAML/JSON form, as `engine` runs on it (default: the engine the data names,
    else `auto`). Without its own sustained rates, they are peak x the engine's efficiencies."""
    if not isinstance(data, Mapping):
        raise PlannerError(f"a device profile must be a mapping, got {type(data).__name__}")
    where = f"device profile {data.get('id', '?')!r}"
    peak = _rates(data, "peak_tflops", where)
    memory_gbps = _positive(data, "memory_gbps", where)
    kind = str(data.get("kind", "cpu"))
    measured_with = _measured_with(data, kind, where)
    sustained = _rates(data, "sustained_tflops", where) if measured_with else dict(peak)
    if "sustained_memory_gbps" in data:
        sustained_gbps = _positive(data, "sustained_memory_gbps", where)
    else:
        sustained_gbps = memory_gbps
    reserve = float(data.get("memory_reserve", MEMORY_RESERVE.get(kind, 0.10)))
    if not 0 <= reserve < 1:
        raise PlannerError(f"{where}: field 'memory_reserve' = {reserve} must be in [0, 1)")
    raw = DeviceProfile(
        id=str(data.get("id") or "unnamed"),
        name=str(data.get("name", data.get("id", "unnamed"))),
        kind=kind,
        memory_gb=_positive(data, "memory_gb", where),
        memory_gbps=memory_gbps,
        peak_tflops=peak,
        sustained_tflops=sustained,
        sustained_memory_gbps=sustained_gbps,
        source=str(data.get("source", "unknown")),
        layer_overhead_seconds=_seconds(data, "layer_overhead_seconds", where) if measured_with else 0.0,
        # measured since issue 19's step-overhead calibration; older files have none (0)
        step_overhead_seconds=_seconds(data, "step_overhead_seconds", where) if measured_with else 0.0,
        decode_gbps=_rates(data, "decode_gbps", where) if measured_with and data.get("decode_gbps") else {},
        # Measured attention rates (calibrate since issue 19; older files have none: derived from GEMMs).
        attention_tflops=_rates(data, "attention_tflops", where)
        if measured_with and data.get("attention_tflops")
        else {},
        kv_gbps=_positive(data, "kv_gbps", where)
        if measured_with and data.get("kv_gbps") is not None
        else None,
        gpu_products=tuple(str(p) for p in data.get("gpu_products", ())),
        measured=bool(data.get("measured", False)),
        memory_reserve=reserve,
        engine=str(data.get("engine") or measured_with) if measured_with else "",
        measured_with=measured_with,
    )
    named = str(data.get("engine") or "auto")
    if engine is None and "/" in named:
        name, device = named.split("/", 1)
        return with_engine(raw, name, device)
    return with_engine(raw, engine or named)


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


def device_profile(ref: str, engine: str | None = None) -> DeviceProfile:
    """A built-in profile by id, or a profile file (`calibrate --out`) by path, as `engine` runs on it
    (None: the file's engine, else `auto`)."""
    devices = builtin_devices()
    if ref in devices:
        return devices[ref] if engine is None else with_engine(devices[ref], engine)
    path = Path(ref)
    if path.suffix in (".json", ".yaml", ".yml") or path.exists():
        return device_from_dict(read_profile_file(path), engine)
    raise PlannerError(
        f"unknown device {ref!r}; use a profile file from `hybrid-inference calibrate` or one of "
        f"{', '.join(sorted(devices))}"
    )
