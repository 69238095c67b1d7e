"""Batched decode benchmark: aggregate tokens/s and inter-token latency at 1, 2, 4, 8, 16 streams.

Run: `python bench/batch_bench.py [--model DIR] [--streams 1,2,4,8,16] [--out results.json]`
(default model: the cached `bench` demo model, ≈200M parameters, float32). In one process:
- for each stream count N: N sequences with `--prompt-tokens` prompts are prefilled into their KV
  slots, then submitted together to the decode worker's engine loop (decode/batch_loop.py) and
  decoded for `--new-tokens` tokens each (greedy). Aggregate tokens/s = decode tokens of all
  streams ÷ (last token - first token after the joins); ITL p50/p95 over every stream's gaps;
- today's single-sequence path (`engine.decode`, one stream) for the "one stream ≥ 0.95" check;
- read bandwidth (torch sum, best of three spread over the run) and a bare GEMV pass over the same
  weights (the eager-torch ceiling); one-stream bandwidth utilisation of both.
Prints JSON. Speed numbers belong here and in docs/benchmarks.md, never in tests.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import threading
import time

import torch
from bench_setup import emit, load_bench_model, loadavg, model_flags, prompt_ids, read_bandwidth
from engine_bench import bytes_per_token, engine_decode_intervals, gemv_pass_seconds
from hybrid_workers.decode.batch_loop import BatchLoop
from hybrid_workers.decode.kv_budget import KVBudget
from hybrid_workers.decode.runner import model_lock
from hybrid_workers.decode.sequence import SequenceRun
from hybrid_workers.engine import LoadedModel, SamplingParams
from hybrid_workers.engine.batched import TorchDecodeEngine


def batched_run(lm: LoadedModel, engine: TorchDecodeEngine, streams: int, args: argparse.Namespace) -> dict:
    """Decode `streams` sequences together; tokens/s and ITL percentiles of the decode phase."""
    params = SamplingParams(max_tokens=args.new_tokens, temperature=0)
    loop = BatchLoop(engine, KVBudget(1 << 40), model_lock(lm))
    times: list[list[float]] = [[] for _ in range(streams)]
    runs, firsts = [], []
    try:
        for index in range(streams):
            ids = prompt_ids(lm, args.prompt_tokens)
            ids[-1] = 8 + index  # distinct prompts
            slot = loop.reserve(len(ids), params.max_tokens, threading.Event())
            row = engine.prefill_chunk(slot, ids, 0)  # the KV lands first, as from a remote prefill
            firsts.append(engine.sample(row, params, 0))
            runs.append(
                SequenceRun(
                    ids,
                    params,
                    slot,
                    lm.tokenizer,
                    frozenset(),
                    lm.max_context,
                    on_token=lambda _step, mine=times[index]: mine.append(time.perf_counter()),
                    cancelled=threading.Event(),
                )
            )
        with model_lock(lm):  # everyone joins before the first step
            for run, first in zip(runs, firsts, strict=True):
                loop.submit(run, first)
        for run in runs:
            run.done.wait()
    finally:
        loop.close()
    start, end = max(t[0] for t in times), max(t[-1] for t in times)
    decoded = sum(len([x for x in t if x > start]) for t in times)
    gaps = [later - earlier for t in times for earlier, later in itertools.pairwise(t)]
    quantiles = statistics.quantiles(gaps, n=20)
    return {
        "streams": streams,
        "aggregate_tokens_per_second": decoded / (end - start),
        "itl_p50_seconds": statistics.median(gaps),
        "itl_p95_seconds": quantiles[18],
    }


def run(args: argparse.Namespace) -> dict:
    """All measurements on one loaded model; returns the results as a JSON-ready dict."""
    loadavg_before = loadavg()
    lm = load_bench_model(args)
    engine = TorchDecodeEngine(lm)
    prompt = prompt_ids(lm, args.prompt_tokens)
    bandwidths = [read_bandwidth()]
    engine_decode_intervals(lm, prompt, 4)  # warm-up
    today = 1 / statistics.median(engine_decode_intervals(lm, prompt, args.new_tokens))
    batched = [batched_run(lm, engine, n, args) for n in args.streams]
    bandwidths.append(read_bandwidth())
    gemv = 1 / gemv_pass_seconds(lm)
    bandwidths.append(read_bandwidth())
    per_token = bytes_per_token(lm, args.prompt_tokens + args.new_tokens // 2)
    best = max(bandwidths)
    one = next((b for b in batched if b["streams"] == 1), None)
    results = {
        "model": lm.name,
        "dtype": str(lm.dtype).removeprefix("torch."),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "prompt_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens,
        "loadavg_before": loadavg_before,
        "batched": batched,
        "single_path_tokens_per_second": today,
        "bytes_read_per_token": per_token,
        "read_bandwidth_bytes_per_second": best,
        "read_bandwidth_samples": bandwidths,
        "gemv_only_tokens_per_second": gemv,
        "gemv_only_bandwidth_utilisation": gemv * per_token / best,
    }
    if one is not None:
        one_tps = 1 / one["itl_p50_seconds"]
        results["one_stream_tokens_per_second"] = one_tps
        results["one_stream_vs_single_path"] = one_tps / today
        results["one_stream_bandwidth_utilisation"] = one_tps * per_token / best
        results["one_stream_vs_gemv_ceiling"] = one_tps / gemv
        for entry in batched:
            entry["vs_one_stream"] = entry["aggregate_tokens_per_second"] / one["aggregate_tokens_per_second"]
    return results


def main(argv: list[str] | None = None) -> int:
    """Parse flags, run, print JSON (and write it to --out)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    model_flags(parser, prompt_tokens=64, new_tokens=64)
    parser.add_argument("--streams", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4, 8, 16])
    args = parser.parse_args(argv)
    return emit(run(args), args.out)


if __name__ == "__main__":
    sys.exit(main())
