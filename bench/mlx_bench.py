"""MLX vs torch decode benchmark: tokens/s on the same model and box, and the share of memory bandwidth.

Run: `python bench/mlx_bench.py [--model DIR] [--dtype float32] [--streams 1,4] [--agreement]`
(default model: the trained default, SmolLM2-135M-Instruct). Both engines decode through the
engine-neutral interface the decode worker uses (decode/engine_api.DecodeEngine): a local prefill of
a `--prompt-tokens` prompt per stream, then `--new-tokens` batched steps; tokens/s per stream is
1 / the median step time, aggregate = streams x that. Bandwidth share = tokens/s x bytes a step
reads (weights except the embedding table, plus the KV cache) / this machine's read bandwidth
(best of torch sums over 1 GiB, measured in the same run). `--agreement` also reports how often the
MLX engine's greedy choice equals torch's in `--agreement-dtype` (teacher-forced, torch prefill).

On a Mac with Metal (the target): `pip install 'hybrid-inference[mlx]'`, then
`python bench/mlx_bench.py --torch-device mps --dtype float16`. On Linux the CPU build of MLX runs
(its wheel computes float32 matrix products with the reference BLAS): the numbers say nothing about
Metal, which these machines cannot test. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from hybrid_workers.engine import SamplingParams, load_model
from hybrid_workers.engine.batched import TorchDecodeEngine
from hybrid_workers.engine.default_model import default_model_dir
from hybrid_workers.mlx_engine.engine import MlxDecodeEngine
from hybrid_workers.mlx_engine.loading import load_mlx_model, mlx_compute_device

sys.path.insert(0, str(Path(__file__).parent))
from bench_setup import read_bandwidth
from engine_bench import bytes_per_token

GREEDY = SamplingParams(max_tokens=1 << 20, temperature=0)


def prompts(lm: Any, streams: int, length: int) -> list[list[int]]:
    text = "The KV cache streams layer by layer from the prefill worker to the decode worker. " * 64
    ids = lm.tokenizer.encode(text)
    return [ids[s : s + length] for s in range(streams)]


def step_seconds(engine: Any, batch: list[list[int]], new_tokens: int) -> list[float]:
    """Times of `new_tokens` batched decode steps after a local prefill of every prompt."""
    slots, tokens = [], []
    for prompt in batch:
        slot = engine.new_slot(len(prompt), new_tokens + 1)
        logits = engine.prefill_chunk(slot, prompt, 0)
        slots.append(slot)
        tokens.append(engine.sample(logits, GREEDY, 0)[0])
    times = []
    for step in range(new_tokens):
        entries = [(s, t, len(p) + step) for s, t, p in zip(slots, tokens, batch, strict=True)]
        start = time.perf_counter()
        rows = engine.step(entries)
        times.append(time.perf_counter() - start)
        tokens = [engine.sample(row, GREEDY, step + 1)[0] for row in rows]
    for slot in slots:
        slot.release()
    return times


def speed(engine: Any, lm: Any, streams: int, args: argparse.Namespace, bandwidth: float) -> dict:
    batch = prompts(lm, streams, args.prompt_tokens)
    step_seconds(engine, batch, 2)  # warm-up
    times = step_seconds(engine, batch, args.new_tokens)
    median = statistics.median(times)
    per_token = bytes_per_token(lm, args.prompt_tokens + args.new_tokens // 2)
    return {
        "streams": streams,
        "tokens_per_second_per_stream": 1 / median,
        "aggregate_tokens_per_second": streams / median,
        "step_seconds_median": median,
        "step_seconds_p10_p90": [statistics.quantiles(times, n=10)[i] for i in (0, 8)],
        "bandwidth_share": per_token / median / bandwidth,  # weights are read once per step
    }


def agreement(model: str, dtype: str) -> dict:
    """Teacher-forced greedy agreement of MLX with torch in `dtype` on the MLX tests' prompts."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "workers" / "mlx_engine"))
    from mlx_handoff import forced_steps, torch_greedy
    from test_mlx_exactness import NEW_TOKENS
    from test_mlx_exactness import prompts as test_prompts

    lm = load_model(model, device="cpu", dtype=dtype, progress=False)
    engine = MlxDecodeEngine(load_mlx_model(model, dtype=dtype))
    runs = torch_greedy(lm, list(test_prompts(lm).values()), NEW_TOKENS)
    forced = forced_steps(engine, runs, [run.tokens for run in runs])
    pairs = [
        (int(torch.argmax(logits)) == token, float((logits - want).abs().max()))
        for run, row in zip(runs, forced, strict=True)
        for logits, want, token in zip(row, run.logits, run.tokens[1:], strict=True)
    ]
    return {
        "dtype": dtype,
        "prompts": len(runs),
        "steps": len(pairs),
        "agreement": sum(agree for agree, _ in pairs) / len(pairs),
        "max_abs_logit_diff": max(diff for _, diff in pairs),
    }


def run(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    model = args.model or str(default_model_dir())
    lm = load_model(model, device=args.torch_device, dtype=args.dtype, progress=False)
    mm = load_mlx_model(model, dtype=args.dtype)
    bandwidths = [read_bandwidth()]
    engines = {"torch": TorchDecodeEngine(lm), "mlx": MlxDecodeEngine(mm)}
    results: dict[str, Any] = {
        "model": model,
        "dtype": args.dtype,
        "torch_device": lm.device.type,
        "mlx_device": mlx_compute_device().value,
        "torch_threads": torch.get_num_threads(),
        "prompt_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens,
    }
    for streams in [int(s) for s in args.streams.split(",")]:
        for name, engine in engines.items():
            results[f"{name}_{streams}"] = speed(engine, lm, streams, args, max(bandwidths))
            bandwidths.append(read_bandwidth())
    results["read_bandwidth_bytes_per_second"] = max(bandwidths)
    results["mlx_vs_torch_1_stream"] = (
        results["mlx_1"]["tokens_per_second_per_stream"] / results["torch_1"]["tokens_per_second_per_stream"]
        if "mlx_1" in results
        else None
    )
    if args.agreement:
        results["agreement"] = agreement(model, args.agreement_dtype)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model folder; default: the trained default model")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--torch-device", default="cpu", help="cpu, cuda or mps (torch's side)")
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--streams", default="1", help="comma-separated batch sizes, e.g. 1,4")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0: torch's default")
    parser.add_argument("--agreement", action="store_true", help="also measure MLX/torch token agreement")
    parser.add_argument("--agreement-dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    args = parser.parse_args(argv)
    print(json.dumps(run(args), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
