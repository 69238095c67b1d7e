"""`hybrid-inference plan`: predict TTFT, decode TPS and total time for every placement (no torch)."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from hybrid_workers.enums import CONCRETE_DTYPES, DType, RuntimeEngine, WireEncoding
from hybrid_workers.errors import UserError
from hybrid_workers.options import add_option

# plan's flags read HYBRID_INFERENCE_PLAN_<FLAG>, not the workers' HYBRID_INFERENCE_<FLAG>: the same
# name means different things there (`--dtype auto`, `--model` as a served folder).
PLAN_ENV_PREFIX = "HYBRID_INFERENCE_PLAN_"


def _env(flag: str) -> str:
    return PLAN_ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def _add(parser: Any, flag: str, **kwargs: Any) -> None:
    add_option(parser, flag, env=_env(flag), **kwargs)


def register(subparsers: Any) -> None:
    """Add the `plan` command."""
    parser = subparsers.add_parser(
        "plan",
        help="predict where prefill and decode should run (roofline model)",
        description="Predict TTFT, decode tokens/s and total time for each device alone and for every "
        "split between them, from hardware, link and model shapes alone.",
    )
    _add(parser, "--model", help="built-in model shape (e.g. llama-3.1-8b) or a config.json path")
    _add(parser, "--prefill-device", help="device profile id (e.g. dgx-spark) or calibrate file")
    _add(parser, "--decode-device", help="device profile id (e.g. m3-ultra) or calibrate file")
    _add(
        parser,
        "--prefill-engine",
        default=RuntimeEngine.AUTO,
        choices=RuntimeEngine,
        help="engine on the prefill device (auto: mlx on Apple GPUs, torch elsewhere)",
    )
    _add(
        parser,
        "--decode-engine",
        default=RuntimeEngine.AUTO,
        choices=RuntimeEngine,
        help="engine on the decode device (auto: mlx on Apple GPUs, torch elsewhere)",
    )
    _add(parser, "--link", default="10gbe", help="link profile id (e.g. 10gbe) or measured link file")
    _add(parser, "--prompt-tokens", default=8192, type=int, help="prompt length")
    _add(parser, "--output-tokens", default=32, type=int, help="decode steps after the first token")
    _add(parser, "--dtype", default=DType.FLOAT16, choices=CONCRETE_DTYPES, help="activation and KV dtype")
    _add(
        parser,
        "--weights",
        default=None,
        help="weight format when not the dtype: q8_0, q6_k, q4_0, q4_k_m, fp8, nvfp4, mlx-8bit, mlx-4bit",
    )
    _add(parser, "--kv-compression", default=WireEncoding.NONE, choices=WireEncoding, help="KV wire encoding")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.add_argument("--plot", type=Path, default=None, help="write the best split's timeline as PNG")
    parser.add_argument("--list", action="store_true", help="list the built-in devices, links and models")
    parser.set_defaults(func=run)


def _check_args(args: argparse.Namespace) -> None:
    for flag in ("model", "prefill_device", "decode_device"):
        if not getattr(args, flag):
            name = "--" + flag.replace("_", "-")
            raise UserError(f"{name} is required (or set {_env(name)})")
    for flag in ("prompt_tokens", "output_tokens"):
        if getattr(args, flag) < 0:
            raise UserError(f"--{flag.replace('_', '-')} {getattr(args, flag)}: must be >= 0")
    if args.plot is not None and args.plot.suffix.lower() != ".png":
        raise UserError(f"--plot {args.plot}: the timeline is written as PNG; give a path ending in .png")


def _table(plan: Any) -> str:
    width = max(14, *(len(p.prefill) + 2 for p in plan.placements))
    names = f"{'prefill':<{width}}{'decode':<{width}}{'mode':<10}"
    header = names + f"{'TTFT s':>9}{'tok/s':>9}{'total s':>9}{'KV exposed s':>14}"
    lines = [header, "-" * len(header)]
    for p in plan.placements:
        mark = "  <- best" if p == plan.best else ("  (does not fit: " + p.note + ")" if not p.fits else "")
        lines.append(
            f"{p.prefill:<{width}}{p.decode:<{width}}{p.mode:<10}{p.ttft_seconds:>9.3f}"
            f"{p.decode_tokens_per_second:>9.1f}{p.total_seconds:>9.3f}{p.kv_exposed_seconds:>14.3f}{mark}"
        )
    return "\n".join(lines)


def _threshold_line(plan: Any) -> str:
    if plan.best.mode == "single":
        return "remote prefill: not used (the best placement is a single node)"
    if plan.remote_prefill_min_tokens is None:
        return "remote prefill never beats local prefill on the decode node"
    return f"remote prefill pays from {plan.remote_prefill_min_tokens} prompt tokens (remotePrefillMinTokens)"


def _plot(plan: Any, path: Path) -> None:
    from hybrid_operator.planner.timeline import draw_timeline

    splits = [p for p in plan.placements if p.mode == "layerwise" and p.fits]
    if not splits:
        raise UserError(f"--plot {path}: no split placement to draw (give two different devices)")
    best = min(splits, key=lambda p: p.total_seconds)
    title = (
        f"{plan.model.name}, {plan.request.prompt_tokens}-token prompt: prefill on {best.prefill}, "
        f"decode on {best.decode}, over {plan.link.id}"
    )
    try:
        draw_timeline(best, plan.model.layers, path, title)
    except OSError as exc:
        raise UserError(f"--plot {path}: cannot write: {exc.strerror}") from None


def _catalog() -> str:
    from hybrid_operator.planner import builtin_devices, builtin_links
    from hybrid_operator.planner.engines import engine_profiles
    from hybrid_operator.planner.model_shape import builtin_model_names

    lines = ["devices (peak FP16 TFLOP/s, memory GB/s):"]
    for device in builtin_devices().values():
        fp16 = device.peak_tflops.get("float16", 0)
        lines.append(f"  {device.id:<14}{fp16:>8g}{device.memory_gbps:>8g}  {device.name}")
    lines.append("links (line Gb/s x payload efficiency):")
    lines += [
        f"  {link.id:<14}{link.gbps:>6g} x {link.efficiency:<5g} {link.name}"
        for link in builtin_links().values()
    ]
    lines.append("engines (GEMM, attention, bandwidth efficiency; per-layer overhead; quantised prefill):")
    lines += [
        f"  {e.key:<19}{e.compute_efficiency:>6g}{e.attention_efficiency:>6g}{e.bandwidth_efficiency:>7g}"
        f"{e.layer_overhead_seconds * 1000:>7g} ms  {e.quantised_prefill} x {e.quantised_efficiency:g}"
        for e in engine_profiles().values()
    ]
    lines.append("models: " + ", ".join(builtin_model_names()) + ", or a config.json / model folder")
    return "\n".join(lines)


def _devices(args: argparse.Namespace) -> list[Any]:
    """The two device profiles as their engines run on them (one id each: the same device with two
    engines becomes `id/engine`)."""
    from hybrid_operator.planner import PlannerError, device_profile

    devices = []
    for flag in ("prefill", "decode"):
        ref, engine = getattr(args, f"{flag}_device"), getattr(args, f"{flag}_engine")
        try:
            devices.append(device_profile(ref, engine.value))
        except PlannerError as exc:
            raise UserError(f"--{flag}-device {ref} --{flag}-engine {engine}: {exc}") from None
    prefill, decode = devices
    if prefill.id == decode.id and prefill.engine != decode.engine:
        devices = [replace(d, id=f"{d.id}/{d.engine.split('/')[0]}") for d in devices]
    return devices


def run(args: argparse.Namespace) -> int:
    """Print the plan (table + verdict, or JSON); draw the timeline when --plot is given."""
    from hybrid_operator.planner import PlannerError, Request, link_profile, make_plan
    from hybrid_operator.planner import model_shape as shape_of

    if args.list:
        print(_catalog())
        return 0
    _check_args(args)
    devices = _devices(args)
    try:
        model = shape_of(args.model)
        request = Request(
            args.prompt_tokens, args.output_tokens, args.dtype, args.kv_compression, weights=args.weights
        )
        plan = make_plan(model, devices, link_profile(args.link), request)
    except PlannerError as exc:
        raise UserError(str(exc)) from None
    if args.plot is not None:
        _plot(plan, args.plot)
    if args.json:
        print(json.dumps(plan.to_dict(), indent=2))
        return 0
    weights = f", weights {args.weights}" if args.weights else ""
    print(
        f"{model.name} ({model.params / 1e9:.2f} B params, {args.dtype}{weights}), "
        f"{args.prompt_tokens} prompt + "
        f"{args.output_tokens} output tokens, link {plan.link.id}, KV wire {args.kv_compression}"
    )
    print("engines: " + ", ".join(dict.fromkeys(f"{d.id} {d.engine}" for d in devices)))
    print(_table(plan))
    print(_threshold_line(plan))
    print(plan.verdict())
    return 0
