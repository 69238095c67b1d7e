"""One stream: the batch loop vs today's single-sequence path, alternated in one process (A/B).

Run: `cd bench && python one_stream_ab.py MODEL_DIR [--tokens 32] [--rounds 4]` (torch 1 thread,
64-token prompt). Prints tokens/s = 1 / median gap of each path and their ratio (loop ÷ single).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import threading
import time

import torch
from bench_setup import prompt_ids
from engine_bench import engine_decode_intervals
from hybrid_workers.decode.batch_loop import BatchLoop
from hybrid_workers.decode.kv_budget import KVBudget
from hybrid_workers.decode.runner import model_lock
from hybrid_workers.decode.sequence import SequenceRun
from hybrid_workers.engine import LoadedModel, SamplingParams, load_model
from hybrid_workers.engine.batched import TorchDecodeEngine


def loop_intervals(lm: LoadedModel, engine: TorchDecodeEngine, prompt: list[int], tokens: int) -> list[float]:
    """Gaps between the tokens of one sequence decoded by the engine loop (its KV prefilled first)."""
    loop = BatchLoop(engine, KVBudget(1 << 40), model_lock(lm))
    params = SamplingParams(max_tokens=tokens, temperature=0)
    slot = loop.reserve(len(prompt), tokens, threading.Event())
    row = engine.prefill_chunk(slot, prompt, 0)
    times: list[float] = []
    run = SequenceRun(
        prompt, params, slot, lm.tokenizer, frozenset(), lm.max_context,
        on_token=lambda _step: times.append(time.perf_counter()), cancelled=threading.Event(),
    )  # fmt: skip
    loop.submit(run, engine.sample(row, params, 0))
    run.done.wait()
    loop.close()
    return [later - earlier for earlier, later in itertools.pairwise(times)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(1)
    lm = load_model(args.model, device="cpu", dtype="float32", progress=False)
    engine = TorchDecodeEngine(lm)
    prompt = prompt_ids(lm, 64)
    engine_decode_intervals(lm, prompt, 4)  # warm-up both
    loop_intervals(lm, engine, prompt, 4)
    single: list[float] = []
    batched: list[float] = []
    for _ in range(args.rounds):
        single += engine_decode_intervals(lm, prompt, args.tokens)
        batched += loop_intervals(lm, engine, prompt, args.tokens)
    single_tps, loop_tps = 1 / statistics.median(single), 1 / statistics.median(batched)
    print(
        f"single {single_tps:.2f} tok/s, loop {loop_tps:.2f} tok/s, loop / single {loop_tps / single_tps:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
