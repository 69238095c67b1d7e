"""Engine benchmark: per-layer emission overhead on prefill, and decode speed / bandwidth vs transformers.

Run: `python bench/engine_bench.py [--model DIR] [--out results.json]` (default model: the cached
`bench` demo model, ≈200M parameters, written on first use). In one process it measures:
- read bandwidth of this machine (torch sum over a large buffer, best of several passes);
- a plain forward over the prompt vs `prefill()` with an `on_layer` receiver (ratio; goal ≥ 0.95);
- decode tokens/s of `engine.decode` vs `model.generate` (greedy, same prompt, same token count,
  1 / median time between tokens);
- decode bandwidth utilisation = tokens/s × bytes read per token ÷ measured read bandwidth.
Prints JSON. Speed numbers belong here and in docs/benchmarks.md, never in tests.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from bench_setup import emit, load_bench_model, loadavg, model_flags, prompt_ids, read_bandwidth, seconds
from hybrid_workers.engine import LoadedModel, SamplingParams, decode, prefill, sample


@contextmanager
def _without_layer_hooks(lm: LoadedModel) -> Iterator[None]:
    """Take the engine's (idle) layer hooks off for a truly plain baseline; bench-only, private torch API."""
    saved = [(layer._forward_pre_hooks, layer._forward_hooks) for layer in lm.model.model.layers]
    for layer in lm.model.model.layers:
        layer._forward_pre_hooks, layer._forward_hooks = OrderedDict(), OrderedDict()
    try:
        yield
    finally:
        for layer, (pre, post) in zip(lm.model.model.layers, saved, strict=True):
            layer._forward_pre_hooks, layer._forward_hooks = pre, post


def plain_forward(lm: LoadedModel, prompt: list[int]) -> float:
    """Seconds for the ordinary transformers forward that prefill replaces (cache on, last logits only)."""
    input_ids = torch.tensor([prompt], device=lm.device)  # [1, seq]
    with torch.no_grad(), _without_layer_hooks(lm):
        return seconds(lambda: lm.model(input_ids=input_ids, use_cache=True, logits_to_keep=1))


def emitting_prefill(lm: LoadedModel, prompt: list[int]) -> float:
    """Seconds for prefill() handing every layer to a receiver that keeps references (as a sender would)."""
    received: list[tuple[int, torch.Tensor, torch.Tensor]] = []
    return seconds(lambda: prefill(lm, prompt, lambda i, k, v: received.append((i, k, v))))


def prefill_overhead(lm: LoadedModel, prompt: list[int], repeats: int) -> dict[str, float]:
    """Interleaved runs of both; best of each (interference on a shared machine only adds time)."""
    plain_forward(lm, prompt)  # warm-up (allocator, kernels)
    plain, emitting = [], []
    for _ in range(repeats):
        plain.append(plain_forward(lm, prompt))
        emitting.append(emitting_prefill(lm, prompt))
    return {
        "plain_forward_seconds": min(plain),
        "prefill_with_emission_seconds": min(emitting),
        "prefill_speed_vs_plain": min(plain) / min(emitting),
        "prefill_speed_vs_plain_medians": statistics.median(plain) / statistics.median(emitting),
    }


def engine_decode_intervals(lm: LoadedModel, prompt: list[int], tokens: int) -> list[float]:
    """Seconds between consecutive tokens of engine.decode after a prefill (`tokens` - 1 intervals)."""
    greedy = SamplingParams(max_tokens=tokens, temperature=0)
    result = prefill(lm, prompt)
    first, _ = sample(result.logits, greedy, 0)
    times = [time.perf_counter()]
    for _step, _ in zip(
        decode(lm, result.cache, first, len(prompt), greedy), range(tokens - 1), strict=False
    ):
        times.append(time.perf_counter())
    return [later - earlier for earlier, later in itertools.pairwise(times)]


class _TokenClock:
    """A `generate` streamer that only notes when each new token arrives."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.calls = 0

    def put(self, value: torch.Tensor) -> None:
        self.calls += 1
        if self.calls > 1:  # the first call carries the prompt
            self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def generate_decode_intervals(lm: LoadedModel, prompt: list[int], tokens: int) -> list[float]:
    """Seconds between consecutive new tokens of transformers `generate` (greedy)."""
    clock = _TokenClock()
    input_ids = torch.tensor([prompt], device=lm.device)  # [1, seq]
    with torch.no_grad():
        lm.model.generate(
            input_ids,
            max_new_tokens=tokens,
            min_new_tokens=tokens,
            do_sample=False,
            streamer=clock,
            pad_token_id=lm.tokenizer.pad_token_id,
        )
    return [later - earlier for earlier, later in itertools.pairwise(clock.times)]


def gemv_pass_seconds(lm: LoadedModel, passes: int = 5) -> float:
    """Best time of one matrix-vector product with every Linear weight of the model, nothing else.

    This is what a decode step cannot beat in eager PyTorch: the same weight reads, no attention,
    norms or Python around them.
    """
    weights = [m.weight for m in lm.model.modules() if isinstance(m, torch.nn.Linear)]
    inputs = [torch.randn(1, w.shape[1], dtype=w.dtype, device=w.device) for w in weights]  # [1, in]

    def one_pass() -> None:
        for weight, x in zip(weights, inputs, strict=True):
            torch.nn.functional.linear(x, weight)  # [1, out]

    with torch.no_grad():
        one_pass()
        return min(seconds(one_pass) for _ in range(passes))


def bytes_per_token(lm: LoadedModel, context: int) -> float:
    """Bytes one decode step reads: every weight except the embedding table (one row), plus the KV cache."""
    element = torch.finfo(lm.dtype).bits // 8
    embedding = lm.model.get_input_embeddings().weight
    weights = sum(p.numel() for p in lm.model.parameters()) - embedding.numel() + embedding.shape[1]
    kv = lm.num_layers * 2 * lm.num_kv_heads * lm.head_dim * context
    return float((weights + kv) * element)


def decode_speed(lm: LoadedModel, prompt: list[int], tokens: int, repeats: int) -> dict:
    """Engine vs generate decode TPS and the GEMV-only ceiling.

    Runs alternate between the two; TPS is 1 / the median time between tokens over all runs, which a
    busy neighbour on a shared machine moves far less than a mean or a best run.
    """
    engine_decode_intervals(lm, prompt, 4)  # warm-up
    engine: list[float] = []
    reference: list[float] = []
    for _ in range(repeats):
        engine += engine_decode_intervals(lm, prompt, tokens)
        reference += generate_decode_intervals(lm, prompt, tokens)
    engine_tps, reference_tps = 1 / statistics.median(engine), 1 / statistics.median(reference)
    return {
        "decode_tokens": tokens,
        "bytes_read_per_token": bytes_per_token(lm, len(prompt) + tokens // 2),
        "engine_decode_tokens_per_second": engine_tps,
        "generate_decode_tokens_per_second": reference_tps,
        "gemv_only_tokens_per_second": 1 / gemv_pass_seconds(lm),
        "engine_vs_generate": engine_tps / reference_tps,
        "engine_mean_tokens_per_second": len(engine) / sum(engine),
        "generate_mean_tokens_per_second": len(reference) / sum(reference),
    }


def utilisation(results: dict, bandwidths: list[float]) -> dict:
    """Bandwidth utilisation of each decode variant against the best read bandwidth seen in the run.

    The best of several measurements spread over the run is used: on a shared machine a single one
    may land in a busy moment, which would flatter the utilisation.
    """
    best = max(bandwidths)
    per_token = results["bytes_read_per_token"]
    return {
        "read_bandwidth_bytes_per_second": best,
        "read_bandwidth_samples": bandwidths,
        **{
            f"{name}_bandwidth_utilisation": results[f"{name}_decode_tokens_per_second"] * per_token / best
            for name in ("engine", "generate")
        },
        "gemv_only_bandwidth_utilisation": results["gemv_only_tokens_per_second"] * per_token / best,
    }


def run(args: argparse.Namespace) -> dict:
    """All measurements on one loaded model; returns the results as a JSON-ready dict."""
    loadavg_before = loadavg()
    lm = load_bench_model(args)
    prompt = prompt_ids(lm, args.prompt_tokens)
    bandwidths = [read_bandwidth()]
    results = {
        "model": lm.name,
        "parameters": sum(p.numel() for p in lm.model.parameters()),
        "dtype": str(lm.dtype).removeprefix("torch."),
        "device": lm.device.type,
        "torch_threads": torch.get_num_threads(),
        "prompt_tokens": len(prompt),
        "loadavg_before": loadavg_before,
        **prefill_overhead(lm, prompt, args.repeats),
    }
    bandwidths.append(read_bandwidth())
    results.update(decode_speed(lm, prompt, args.new_tokens, args.repeats))
    bandwidths.append(read_bandwidth())
    results.update(utilisation(results, bandwidths))
    return results


def main(argv: list[str] | None = None) -> int:
    """Parse flags, run, print JSON (and write it to --out)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    model_flags(parser, prompt_tokens=512, new_tokens=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    return emit(run(args), args.out)


if __name__ == "__main__":
    sys.exit(main())
