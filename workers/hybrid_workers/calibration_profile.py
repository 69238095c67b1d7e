"""The device profile `calibrate` writes: every measurement repeated, medians kept, spreads recorded.

The whole set runs `repeats` times and the profile keeps each number's median with its spread
((max - min) / median), so a run on a busy machine shows itself. The result is a device profile in
the planner's JSON shape (`hybrid_operator.planner.hardware.device_from_dict` reads it back); the
rates in it are the ones for which `plan`'s formulas reproduce the measured decoder-layer times
(calibrated_rates.py).
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import torch
from hybrid_operator.planner.model_shape import ModelShape

from hybrid_workers import layer_calibration as layers
from hybrid_workers.calibrated_rates import (
    LayerTimes,
    bounded_overhead,
    decode_bytes_per_second,
    kv_bytes_per_second,
    prefill_flops_per_second,
)
from hybrid_workers.calibration import (
    SIZES,
    device_name,
    head_gbps,
    layer_overhead_seconds,
    matmul_tflops,
    memory_gb,
    read_gbps,
)
from hybrid_workers.enums import DType
from hybrid_workers.torch_dtypes import TORCH_DTYPES

Progress = Callable[[str], None]
# Measurements per dtype: matmul, attention, prefill layers, decode layers at `rows` and at
# LONG_CONTEXT x `rows` cached tokens, lm_head; once: read, layer overhead, step overhead.
PER_DTYPE = 6
SHARED = 3
LONG_CONTEXT = 4


def _quiet(_: str) -> None:
    """Progress sink that prints nothing."""


@dataclass
class _Runs:
    """Repeats of each measurement: median and spread by name, progress lines as they finish."""

    repeats: int
    progress: Progress
    total: int  # measurements per repeat, for the [i/n] counter
    done: int = 0
    spread: dict[str, float] | None = None

    def take(self, name: str, measure: Callable[[], float], unit: str) -> float:
        """Run `measure` `repeats` times; report and return the median (spread kept under `name`)."""
        values = [measure() for _ in range(self.repeats)]
        middle = statistics.median(values)
        spread = (max(values) - min(values)) / middle if middle > 0 and middle != float("inf") else 0.0
        self.spread = {**(self.spread or {}), name: round(spread, 4)}
        self.done += 1
        shown = ", ".join(f"{v:.4g}" for v in values)
        self.progress(f"calibrate [{self.done}/{self.total}] {name}: {middle:.4g} {unit} ({shown})")
        return middle


@dataclass(frozen=True)
class _DtypeRuns:
    """The per-dtype medians: peak, attention rate, layer times, lm_head read."""

    peak_tflops: float
    attention_tflops: float
    prefill_seconds: float
    decode_seconds: float  # at `rows` cached tokens
    decode_long_seconds: float  # at LONG_CONTEXT x `rows` cached tokens
    head_gbps: float


def _per_dtype(
    runs: _Runs, device: torch.device, d: str, budget: float, shape: ModelShape, rows: int
) -> _DtypeRuns:
    dtype = TORCH_DTYPES[DType(d)]
    peak = runs.take(f"matmul {d}", partial(matmul_tflops, device, dtype, budget), "TFLOP/s")
    attention = runs.take(
        f"attention {d}", partial(layers.attention_tflops, device, dtype, budget, shape, 2 * rows), "TFLOP/s"
    )
    prefill = runs.take(
        f"prefill layers {d}", partial(layers.prefill_layer_seconds, device, dtype, budget, shape, rows), "s"
    )
    decode = runs.take(
        f"decode layers {d}", partial(layers.decode_layer_seconds, device, dtype, budget, shape, rows), "s"
    )
    long = LONG_CONTEXT * rows
    decode_long = runs.take(
        f"decode layers {d} at {long}",
        partial(layers.decode_layer_seconds, device, dtype, budget, shape, long),
        "s",
    )
    head = runs.take(f"lm_head {d}", partial(head_gbps, device, dtype, budget, shape), "GB/s")
    return _DtypeRuns(peak, attention, prefill, decode, decode_long, head)


def measure_profile(
    device: torch.device,
    dtypes: list[str],
    budget: float,
    name: str,
    shape: ModelShape,
    rows: int = 512,
    repeats: int = 1,
    progress: Progress = _quiet,
) -> dict[str, Any]:
    """A device profile (planner JSON) measured on `device`; `budget` seconds per measurement, each
    measurement `repeats` times (median kept, spread recorded). Peak: a square-ish GEMM; sustained
    prefill and decode rates: from decoder layers of `shape` (a `rows`-token prefill, decode steps
    with `rows` and LONG_CONTEXT x `rows` cached tokens; the decode loop's own cost per step outside
    them). `progress` gets one line per finished measurement."""
    runs = _Runs(repeats, progress, total=PER_DTYPE * len(dtypes) + SHARED)
    measured = {d: _per_dtype(runs, device, d, budget, shape, rows) for d in dtypes}
    layers.layer_stack.cache_clear()  # the last stack's weights are not needed any more
    read = runs.take("read", partial(read_gbps, device, budget), "GB/s")
    calibration_overhead = runs.take(
        "layer overhead", partial(layer_overhead_seconds, device, 2 * budget), "s"
    )
    step = runs.take("step overhead", partial(layers.step_overhead_seconds, device, budget, shape), "s")
    kv_rates = {
        d: kv_bytes_per_second(
            shape, d, (rows, m.decode_seconds), (LONG_CONTEXT * rows, m.decode_long_seconds)
        )
        for d, m in measured.items()
    }
    finite = [rate for rate in kv_rates.values() if rate != float("inf")]
    kv = statistics.median(finite) / 1e9 if finite else float("inf")  # one rate for all dtypes
    times = {
        d: LayerTimes(
            rows=rows,
            prefill_seconds=m.prefill_seconds,
            decode_seconds=m.decode_seconds,
            attention_flops_per_second=m.attention_tflops * 1e12,
            head_bytes_per_second=m.head_gbps * 1e9,
            layer_overhead_seconds=calibration_overhead,
            kv_bytes_per_second=kv * 1e9,
        )
        for d, m in measured.items()
    }
    # one overhead for all dtypes: the calibration model's, bounded by the shape's own decode layers
    overhead = min(bounded_overhead(calibration_overhead, shape, d, t) for d, t in times.items())
    times = {d: replace(t, layer_overhead_seconds=overhead) for d, t in times.items()}
    tflops = {d: prefill_flops_per_second(shape, t) / 1e12 for d, t in times.items()}
    decode = {d: decode_bytes_per_second(shape, d, t) / 1e9 for d, t in times.items()}
    head = {d: m.head_gbps for d, m in measured.items()}
    when = time.strftime("%Y-%m-%d %H:%M:%S")
    return {
        "kind_of_profile": "device",
        "id": name,
        "name": device_name(device),
        "kind": {"cuda": "gpu", "mps": "apple"}.get(device.type, "cpu"),
        "memory_gb": round(memory_gb(device), 2),
        # The plain read (or the lm_head's matrix-vector read) is the bandwidth "peak".
        "memory_gbps": round(max(read, *head.values(), *decode.values()), 3),
        "peak_tflops": {d: round(max(m.peak_tflops, tflops[d]), 5) for d, m in measured.items()},
        "sustained_tflops": {d: round(rate, 5) for d, rate in tflops.items()},
        "attention_tflops": {d: round(m.attention_tflops, 5) for d, m in measured.items()},
        "sustained_memory_gbps": round(max(decode.values()), 3),
        "decode_gbps": {d: round(rate, 3) for d, rate in decode.items()},
        "layer_overhead_seconds": round(overhead, 7),
        "step_overhead_seconds": round(step, 7),
        **({"kv_gbps": round(kv, 3)} if kv != float("inf") else {}),
        "decoder_layers": _layer_record(shape, rows, measured, head, kv_rates, calibration_overhead, device),
        "measured": True,
        "measured_with": f"torch/{device.type}",  # the engine whose rates these are (engines.py)
        "repeats": repeats,
        "spread": runs.spread or {},
        "source": (
            f"hybrid-inference calibrate on {platform.node()} at {when}: torch {torch.__version__} "
            f"peak: matmul {SIZES[device.type].gemm}; prefill ({rows} tokens) and decode ({rows} and "
            f"{LONG_CONTEXT * rows} cached) through {shape.name}'s decoder layers; attention over "
            f"{2 * rows} tokens; "
            f"sum-reduction read {read:.1f} GB/s, median of {repeats} repeats"
        ),
    }


def _layer_record(
    shape: ModelShape,
    rows: int,
    measured: dict[str, _DtypeRuns],
    head: dict[str, float],
    kv_rates: dict[str, float],
    calibration_overhead: float,
    device: torch.device,
) -> dict[str, Any]:
    """The raw decoder-layer measurements the rates come from (informational; `plan` reads the rates)."""
    return {
        "shape": shape.name,
        "stack_layers": {d: layers.stack_depth(shape, TORCH_DTYPES[DType(d)], device) for d in measured},
        "prefill_tokens": rows,
        "decode_context": rows,
        "long_decode_context": LONG_CONTEXT * rows,
        "attention_tokens": 2 * rows,
        "prefill_seconds": {d: round(m.prefill_seconds, 7) for d, m in measured.items()},
        "decode_seconds": {d: round(m.decode_seconds, 7) for d, m in measured.items()},
        "long_decode_seconds": {d: round(m.decode_long_seconds, 7) for d, m in measured.items()},
        "head_gbps": {d: round(rate, 3) for d, rate in head.items()},
        # per dtype; the profile's kv_gbps is their median (absent: no longer cache measured slower)
        "kv_gbps": {d: round(rate / 1e9, 3) for d, rate in kv_rates.items() if rate != float("inf")},
        # the calibration model's per-layer cost, before the bound by the shape's decode layer
        "calibration_layer_overhead_seconds": round(calibration_overhead, 7),
    }
