"""`hybrid-inference calibrate`: measure this machine (and optionally a link) as planner profiles."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from hybrid_workers.errors import UserError
from hybrid_workers.options import add_option

CALIBRATE_DTYPES = ("float32", "bfloat16", "float16")


def register(subparsers: Any) -> None:
    """Add the `calibrate` command."""
    parser = subparsers.add_parser(
        "calibrate",
        help="measure this machine's matmul rate and memory bandwidth for `plan`",
        description="Measures dense matmul TFLOP/s per dtype, memory read and matrix-vector bandwidth, "
        "and the per-layer decode overhead with torch, and writes a device profile that `plan "
        "--prefill-device FILE` and the operator (as the hybridinference.dev/profile annotation) use.",
    )
    add_option(parser, "--out", default=None, help="write the profile JSON here (default: stdout only)")
    add_option(parser, "--device", default="auto", help="cpu, cuda, mps or auto")
    add_option(parser, "--id", default="this-machine", help="profile id to record")
    add_option(parser, "--dtypes", default="float32,bfloat16", help="comma-separated dtypes to measure")
    add_option(parser, "--budget-seconds", default=1.0, type=float, help="time spent per measurement")
    add_option(parser, "--threads", default=None, type=int, help="torch threads (default: torch's choice)")
    parser.set_defaults(func=run)


def _dtypes(text: str) -> list[str]:
    dtypes = [part.strip() for part in text.split(",") if part.strip()]
    bad = [d for d in dtypes if d not in CALIBRATE_DTYPES]
    if bad or not dtypes:
        raise UserError(
            f"--dtypes {text}: unknown dtype {bad[0] if bad else '(none)'!r}; "
            f"use a comma-separated list of {', '.join(CALIBRATE_DTYPES)}"
        )
    return dtypes


def _check(args: argparse.Namespace) -> list[str]:
    if not args.budget_seconds > 0:
        raise UserError(f"--budget-seconds {args.budget_seconds}: must be > 0")
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads {args.threads}: must be >= 1")
    if args.out is not None and not Path(args.out).parent.is_dir():
        raise UserError(f"--out {args.out}: folder {str(Path(args.out).parent)!r} does not exist")
    return _dtypes(args.dtypes)


def _summary(profile: dict[str, Any]) -> str:
    rates = ", ".join(
        f"{dtype} {rate * 1000:.1f} GFLOP/s" for dtype, rate in profile["sustained_tflops"].items()
    )
    decode = ", ".join(f"{dtype} {rate:.1f} GB/s" for dtype, rate in profile["decode_gbps"].items())
    return (
        f"{profile['name']}: matmul {rates}; read {profile['memory_gbps']:.1f} GB/s; GEMV {decode}; "
        f"decode overhead {profile['layer_overhead_seconds'] * 1e6:.0f} us/layer; "
        f"memory {profile['memory_gb']} GB"
    )


def run(args: argparse.Namespace) -> int:
    """Measure, print a one-line summary to stderr and the profile JSON to stdout (and --out)."""
    dtypes = _check(args)
    import torch

    from hybrid_workers.calibration import measure_profile
    from hybrid_workers.engine.loading import resolve_device

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    profile = measure_profile(device, dtypes, args.budget_seconds, args.id)
    text = json.dumps(profile, indent=2)
    if args.out is not None:
        Path(args.out).write_text(text + "\n")
    print(_summary(profile), file=sys.stderr)
    print(text)
    return 0
