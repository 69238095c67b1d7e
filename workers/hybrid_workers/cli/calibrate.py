"""`hybrid-inference calibrate`: measure this machine (and optionally a link) as planner profiles."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from hybrid_workers.enums import CONCRETE_DTYPES, Device
from hybrid_workers.errors import UserError
from hybrid_workers.options import add_option


def register(subparsers: Any) -> None:
    """Add the `calibrate` command."""
    parser = subparsers.add_parser(
        "calibrate",
        help="measure this machine's prefill and decode rates for `plan`",
        description="Times real decoder layers of --shape (a prefill of --prefill-tokens tokens, decode "
        "steps with as many and with 4x as many cached) per dtype with torch, plus the matmul peak, "
        "attention, the lm_head read, memory read bandwidth, the per-layer overhead and the decode loop's "
        "own cost per step (sampling, logits), and writes a "
        "device profile whose rates make `plan` reproduce those times; `plan --prefill-device FILE` and "
        "the operator (as the hybridinference.dev/profile annotation) use it.",
    )
    add_option(parser, "--out", default=None, help="write the profile JSON here (default: stdout only)")
    add_option(parser, "--device", default=Device.AUTO, choices=Device, help="device to measure")
    add_option(parser, "--id", default="this-machine", help="profile id to record")
    add_option(
        parser,
        "--dtypes",
        default="float32,bfloat16,float16",
        help="comma-separated dtypes to measure (plan's default dtype is float16)",
    )
    add_option(
        parser,
        "--repeats",
        default=3,
        type=int,
        help="times each measurement runs; the profile keeps the median and records the spread",
    )
    add_option(
        parser,
        "--shape",
        default="llama-3.1-8b",
        help="model whose decoder layers are timed (built-in name or config.json): the one you will plan",
    )
    add_option(
        parser,
        "--prefill-tokens",
        default=512,
        type=int,
        help="prompt tokens of the timed prefill (and cached tokens of the timed decode step)",
    )
    add_option(parser, "--budget-seconds", default=1.0, type=float, help="time spent per measurement")
    add_option(parser, "--threads", default=None, type=int, help="torch threads (default: torch's choice)")
    add_option(
        parser, "--peer", default=None, help="HOST:PORT of a running prefill worker: measure the link too"
    )
    add_option(parser, "--peer-tokens", default=0, type=int, help="prompt length for the link test (0: auto)")
    add_option(parser, "--link-out", default=None, help="write the measured link profile JSON here")
    parser.add_argument("--link-only", action="store_true", help="with --peer: measure only the link")
    parser.set_defaults(func=run)


def _dtypes(text: str) -> list[str]:
    dtypes = [part.strip() for part in text.split(",") if part.strip()]
    bad = [d for d in dtypes if d not in CONCRETE_DTYPES]
    if bad or not dtypes:
        raise UserError(
            f"--dtypes {text}: unknown dtype {bad[0] if bad else '(none)'!r}; "
            f"use a comma-separated list of {', '.join(CONCRETE_DTYPES)}"
        )
    return dtypes


def _check(args: argparse.Namespace) -> list[str]:
    if not args.budget_seconds > 0:
        raise UserError(f"--budget-seconds {args.budget_seconds}: must be > 0")
    if args.repeats < 1:
        raise UserError(f"--repeats {args.repeats}: must be >= 1")
    if args.prefill_tokens < 1:
        raise UserError(f"--prefill-tokens {args.prefill_tokens}: must be >= 1")
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads {args.threads}: must be >= 1")
    for flag in ("out", "link_out"):
        value = getattr(args, flag)
        if value is not None and not Path(value).parent.is_dir():
            name = "--" + flag.replace("_", "-")
            raise UserError(f"{name} {value}: folder {str(Path(value).parent)!r} does not exist")
    if args.peer is not None and not _host_port(args.peer):
        raise UserError(f"--peer {args.peer}: expected HOST:PORT, e.g. 10.0.0.5:50051")
    if (args.link_only or args.link_out) and args.peer is None:
        raise UserError("--link-only and --link-out need --peer HOST:PORT")
    return _dtypes(args.dtypes)


def _host_port(text: str) -> bool:
    host, _, port = text.rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536


def _summary(profile: dict[str, Any]) -> str:
    rates = ", ".join(
        f"{dtype} {rate * 1000:.1f} GFLOP/s" for dtype, rate in profile["sustained_tflops"].items()
    )
    decode = ", ".join(f"{dtype} {rate:.1f} GB/s" for dtype, rate in profile["decode_gbps"].items())
    return (
        f"{profile['name']}: prefill {rates}; read {profile['memory_gbps']:.1f} GB/s; decode {decode}; "
        f"{_kv(profile)}; "
        f"decode overhead {profile['layer_overhead_seconds'] * 1e6:.0f} us/layer + "
        f"{profile.get('step_overhead_seconds', 0.0) * 1e6:.0f} us/step; "
        f"memory {profile['memory_gb']} GB; largest spread over {profile['repeats']} repeats "
        f"{max(profile['spread'].values(), default=0.0):.0%} ({_widest(profile['spread'])})"
    )


def _kv(profile: dict[str, Any]) -> str:
    """The KV read rate, or why there is none (the longer-context step measured no slower)."""
    if "kv_gbps" in profile:
        return f"KV {profile['kv_gbps']:.1f} GB/s"
    return "KV not separated (the longer cache measured no slower: charged at the decode rate)"


def _widest(spread: dict[str, float]) -> str:
    return max(spread, key=lambda name: spread[name]) if spread else "-"


def _write(text: str, path: str | None) -> None:
    if path is not None:
        Path(path).write_text(text + "\n")
    print(text)


def _link(args: argparse.Namespace) -> None:
    from hybrid_workers.link_calibration import measure_link

    link = measure_link(args.peer, f"link-to-{args.peer}", tokens=args.peer_tokens)
    print(
        f"link to {args.peer}: {link['gbps']:.2f} Gb/s payload, "
        f"{link['latency_seconds'] * 1e6:.0f} us one-way",
        file=sys.stderr,
    )
    _write(json.dumps(link, indent=2), args.link_out)


def run(args: argparse.Namespace) -> int:
    """Measure, print one-line summaries to stderr and the profile JSON to stdout (and the files)."""
    dtypes = _check(args)
    if not args.link_only:
        _device(args, dtypes)
    if args.peer is not None:
        _link(args)
    return 0


def _device(args: argparse.Namespace, dtypes: list[str]) -> None:
    import torch
    from hybrid_operator.planner import PlannerError, model_shape

    from hybrid_workers.calibration_profile import measure_profile
    from hybrid_workers.engine.loading import resolve_device

    try:
        shape = model_shape(args.shape)
    except PlannerError as exc:
        raise UserError(f"--shape {args.shape}: {exc}") from None
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    profile = measure_profile(
        device, dtypes, args.budget_seconds, args.id, shape, args.prefill_tokens, args.repeats, progress
    )
    print(_summary(profile), file=sys.stderr)
    _write(json.dumps(profile, indent=2), args.out)
