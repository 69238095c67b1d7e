"""Planner vs measured: calibrate this machine, predict the bench demo model's TTFT and decode TPS with
`plan`, and compare with what `hybrid-inference generate` measures (docs/benchmarks.md, "Planner vs
measured"); also what the uncalibrated built-in `generic-cpu` profile (torch/cpu engine) predicts.

Usage: python bench/planner_bench.py [--model DIR] [--prompt-words N[,N...]] [--max-tokens N] [--rounds N]
       [--threads N] [--budget-seconds S] [--paired]
Without --model it uses the cached `bench` demo model (written on first use, ~1 minute). Each round
calibrates once, then generates and plans once per prompt length (`--prompt-words 300,1000`: the
calibrated profile is checked at the calibrated length and away from it). `plan` predicts a running
worker's request, so the comparison is with a warm one: a child process loads the model, completes the
prompt once, then times three more completions of it (medians). `generate`'s own figures, the first
forward of a fresh process, are printed beside them as "cold".

`--paired`: for a model whose requests take milliseconds (demo-tiny), the machine's speed can move by
more than the tolerance between a calibration and a measurement a minute later. Paired rounds run in
one process, back to back: calibrate (`measure_profile`, one repeat of `--budget-seconds` per
measurement), plan from that profile, then three warm completions per prompt length; each round's
plan is compared with the completions right after it, and the medians of those ratios are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CLI = [sys.executable, "-m", "hybrid_workers"]
ENV = dict(os.environ)  # --threads sets OMP_NUM_THREADS here for every child (torch's thread count)
GENERATED = re.compile(
    r"prompt (\d+) tokens, completion (\d+) tokens .*TTFT ([\d.]+) ms, decode ([\d.]+) tokens/s"
)


def calibrate(out: Path, model: str, budget: float) -> dict:
    """Run `calibrate` (float32, the dtype `generate` uses on CPU; `model`'s decoder layers)."""
    command = [
        *CLI,
        "calibrate",
        "--device",
        "cpu",
        "--dtypes",
        "float32",
        "--out",
        str(out),
        "--shape",
        model,
        "--budget-seconds",
        str(budget),
    ]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=ENV)
    return dict(json.loads(out.read_text()))


def generate(model: str, prompt: str, max_tokens: int) -> tuple[int, int, float, float]:
    """(prompt tokens, completion tokens, TTFT s, decode tok/s) of one greedy `generate`."""
    result = subprocess.run(
        [*CLI, "generate", "--model", model, "--device", "cpu", "--dtype", "float32", "--prompt", prompt,
         "--max-tokens", str(max_tokens), "--temperature", "0"],
        check=True, capture_output=True, text=True, env=ENV,
    )  # fmt: skip
    match = GENERATED.search(result.stderr)
    if match is None:
        raise SystemExit(f"cannot parse generate's timing line from: {result.stderr[-500:]}")
    prompt_tokens, tokens, ttft_ms, tps = match.groups()
    return int(prompt_tokens), int(tokens), float(ttft_ms) / 1000, float(tps)


WARM_REPEATS = 3  # timed completions after the warm-up; the median of each figure
# Both child scripts start with this: the model loaded, and one timed greedy completion.
COMPLETION = """
import json, statistics, sys, time
import torch
from hybrid_workers.engine import SamplingParams, encode_prompt, load_model, stream_completion
lm = load_model(sys.argv[1], device="cpu", dtype="float32", progress=False)
def completion(ids, params):  # (TTFT s, decode tok/s, tokens) of one completion of `ids`
    start, times = time.perf_counter(), []
    for _ in stream_completion(lm, ids, params):
        times.append(time.perf_counter() - start)
    rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
    return times[0], rate, len(times)
"""
WARM = (
    COMPLETION
    + """
prompt, max_tokens, repeats = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
params = SamplingParams(max_tokens=max_tokens, temperature=0)
ids = encode_prompt(lm, prompt, max_tokens)
completion(ids, params)  # warm-up: first-call costs of a fresh process
runs = [completion(ids, params) for _ in range(repeats)]
ttft, tps = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
print(len(ids), runs[-1][2], ttft, tps)
"""
)


def generate_warm(model: str, prompt: str, max_tokens: int) -> tuple[int, int, float, float]:
    """(prompt tokens, completion tokens, TTFT s, decode tok/s) of greedy completions of `prompt` in one
    process after a warm-up (medians of WARM_REPEATS): what a running worker serves."""
    result = subprocess.run(
        [sys.executable, "-c", WARM, model, prompt, str(max_tokens), str(WARM_REPEATS)],
        check=True, capture_output=True, text=True, env=ENV,
    )  # fmt: skip
    prompt_tokens, tokens, ttft, tps = result.stdout.split()
    return int(prompt_tokens), int(tokens), float(ttft), float(tps)


def plan(model: str, profile: Path | str, prompt_tokens: int, output_tokens: int) -> dict:
    """The single-node placement `plan` predicts on `profile` (a calibrated file or a built-in id)."""
    result = subprocess.run(
        [*CLI, "plan", "--model", model, "--prefill-device", str(profile), "--decode-device", str(profile),
         "--link", "loopback", "--dtype", "float32", "--prompt-tokens", str(prompt_tokens),
         "--output-tokens", str(output_tokens), "--json"],
        check=True, capture_output=True, text=True, env=ENV,
    )  # fmt: skip
    return dict(json.loads(result.stdout)["best"])


PAIRED = (
    COMPLETION
    + """
from hybrid_operator.planner import Request, link_profile, make_plan, model_shape
from hybrid_operator.planner.hardware import device_from_dict
from hybrid_workers.calibration_profile import measure_profile
rounds, budget, max_tokens, prompts = int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5:]
shape, params = model_shape(sys.argv[1]), SamplingParams(max_tokens=max_tokens, temperature=0)
prompt_ids = [encode_prompt(lm, prompt, max_tokens) for prompt in prompts]
for ids in prompt_ids:
    completion(ids, params)  # warm-up
for round_ in range(rounds):
    box = device_from_dict(measure_profile(torch.device("cpu"), ["float32"], budget, "paired", shape))
    for ids in prompt_ids:
        runs = [completion(ids, params) for _ in range(WARM_REPEATS)]
        request = Request(len(ids), max(1, runs[0][2] - 1), "float32")
        best = make_plan(shape, [box, box], link_profile("loopback"), request).best
        print(json.dumps({"round": round_, "prompt": len(ids), "ttft": statistics.median(r[0] for r in runs),
                          "tps": statistics.median(r[1] for r in runs), "plan_ttft": best.ttft_seconds,
                          "plan_tps": best.decode_tokens_per_second}), flush=True)
""".replace("WARM_REPEATS", str(WARM_REPEATS))
)


def paired(model: str, prompts: list[str], rounds: int, budget: float, max_tokens: int) -> None:
    """Calibrate, plan and measure back to back in one process (PAIRED); print each round and the
    medians of the rounds' planned ÷ measured per prompt length."""
    command = [sys.executable, "-c", PAIRED, model, str(rounds), str(budget), str(max_tokens), *prompts]
    rows: dict[int, list[dict]] = {}
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=ENV) as child:
        assert child.stdout is not None
        for line in child.stdout:
            row = json.loads(line)
            rows.setdefault(row["prompt"], []).append(row)
            ttft, plan_ttft, tps, plan_tps = row["ttft"], row["plan_ttft"], row["tps"], row["plan_tps"]
            print(
                f"round {row['round']} prompt {row['prompt']}: TTFT measured {ttft * 1000:.2f} ms, planned "
                f"{plan_ttft * 1000:.2f} ms ({plan_ttft / ttft - 1:+.0%}) | TPS measured {tps:.1f}, planned "
                f"{plan_tps:.1f} ({plan_tps / tps - 1:+.0%})",
                flush=True,
            )
    if child.returncode:
        raise SystemExit(f"the paired child failed with exit code {child.returncode}")
    for tokens, runs in rows.items():
        ttft = _ratios([r["plan_ttft"] / r["ttft"] for r in runs])
        tps = _ratios([r["plan_tps"] / r["tps"] for r in runs])
        print(
            f"prompt {tokens} tokens, {len(runs)} paired rounds, planned / measured - 1: "
            f"TTFT {ttft}, TPS {tps}"
        )


def _ratios(ratios: list[float]) -> str:
    """`median (min .. max)` of planned / measured - 1."""
    return f"{statistics.median(ratios) - 1:+.0%} ({min(ratios) - 1:+.0%} .. {max(ratios) - 1:+.0%})"


def _prompt(words: int) -> str:
    return " ".join(f"the {w} river runs past the old mill" for w in range(words // 8))


def main() -> int:
    """Alternate calibrate and generate `--rounds` times; print each pair and the medians."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model folder (default: the bench demo model)")
    parser.add_argument("--prompt-words", default="300", help="prompt length(s) in words, comma-separated")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads in every child process")
    parser.add_argument("--budget-seconds", type=float, default=1.0, help="calibrate's time per measurement")
    parser.add_argument(
        "--paired", action="store_true", help="calibrate, plan and measure back to back in one process"
    )
    args = parser.parse_args()
    if args.threads is not None:
        ENV["OMP_NUM_THREADS"] = str(args.threads)
    if args.model is None:
        from hybrid_workers.engine import demo_model_dir

        args.model = str(demo_model_dir("bench"))
    lengths = [int(words) for words in args.prompt_words.split(",")]
    if args.paired:
        paired(
            args.model,
            [_prompt(words) for words in lengths],
            args.rounds,
            args.budget_seconds,
            args.max_tokens,
        )
        return 0
    rows: dict[int, list[tuple[float, float, float, float]]] = {words: [] for words in lengths}
    tokens: dict[int, tuple[int, int]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for round_ in range(args.rounds):
            profile = Path(folder) / f"profile-{round_}.json"
            measured = calibrate(profile, args.model, args.budget_seconds)
            gflops = measured["sustained_tflops"]["float32"] * 1000
            gbps, overhead = measured["decode_gbps"]["float32"], measured["layer_overhead_seconds"] * 1e6
            print(
                f"round {round_}: calibrated prefill {gflops:.0f} GFLOP/s, decode {gbps:.1f} GB/s, "
                f"{overhead:.0f} us/layer overhead, largest spread {max(measured['spread'].values()):.0%}",
                flush=True,
            )
            for words in lengths:
                _, _, cold_ttft, cold_tps = generate(args.model, _prompt(words), args.max_tokens)
                n_prompt, n_out, ttft, tps = generate_warm(args.model, _prompt(words), args.max_tokens)
                tokens[words] = (n_prompt, n_out)
                predicted = plan(args.model, profile, n_prompt, max(1, n_out - 1))
                p_ttft, p_tps = predicted["ttft_seconds"], predicted["decode_tokens_per_second"]
                rows[words].append((ttft, p_ttft, tps, p_tps))
                print(
                    f"  prompt {n_prompt}, {n_out} tokens | TTFT measured {ttft:.3f} s, planned "
                    f"{p_ttft:.3f} s ({p_ttft / ttft - 1:+.0%}) | TPS measured {tps:.1f}, planned "
                    f"{p_tps:.1f} ({p_tps / tps - 1:+.0%}) | cold generate: TTFT {cold_ttft:.3f} s, "
                    f"TPS {cold_tps:.1f}",
                    flush=True,
                )
    for words in lengths:
        _summarise(args.model, tokens[words], rows[words])
    return 0


def _summarise(model: str, tokens: tuple[int, int], rows: list[tuple[float, float, float, float]]) -> None:
    """Medians of measured and planned for one prompt length, and the uncalibrated generic-cpu plan."""
    n_prompt, n_out = tokens
    ttft_m, ttft_p, tps_m, tps_p = (statistics.median(column) for column in zip(*rows, strict=True))
    ttft_range = f"{min(r[0] for r in rows):.3f}-{max(r[0] for r in rows):.3f}"
    tps_range = f"{min(r[2] for r in rows):.1f}-{max(r[2] for r in rows):.1f}"
    print(f"prompt {n_prompt} tokens, median of {len(rows)}: TTFT measured {ttft_m:.3f} s ({ttft_range}) vs "
          f"planned {ttft_p:.3f} s ({ttft_p / ttft_m - 1:+.0%}); TPS measured {tps_m:.1f} ({tps_range}) vs "
          f"planned {tps_p:.1f} ({tps_p / tps_m - 1:+.0%})")  # fmt: skip
    # each round's plan against the measurement right after its calibration (drift between rounds cancels)
    ttft_r = statistics.median(r[1] / r[0] for r in rows) - 1
    tps_r = statistics.median(r[3] / r[2] for r in rows) - 1
    print(f"  median of the rounds' own ratios: TTFT {ttft_r:+.0%}, TPS {tps_r:+.0%}")
    generic = plan(model, "generic-cpu", n_prompt, max(1, n_out - 1))
    g_ttft, g_tps = generic["ttft_seconds"], generic["decode_tokens_per_second"]
    print(
        f"  uncalibrated generic-cpu ({generic['prefill_engine']}): TTFT planned {g_ttft:.3f} s "
        f"(x{g_ttft / ttft_m:.2f} of measured), TPS planned {g_tps:.1f} (x{g_tps / tps_m:.2f})"
    )


if __name__ == "__main__":
    sys.exit(main())
