"""Shared setup of the in-process engine benches: flags, the bench model, prompts, bandwidth, JSON out.

engine_bench.py, batch_bench.py, mlx_bench.py and one_stream_ab.py measure different things on the
same footing: one loaded model with `--threads` torch threads, a seeded random prompt, the machine's
read bandwidth as the yardstick, and the load average noted when the run started.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch
from hybrid_workers.engine import LoadedModel, load_model
from hybrid_workers.engine.demo_model import demo_model_dir


def model_flags(parser: argparse.ArgumentParser, prompt_tokens: int, new_tokens: int) -> None:
    """The flags every in-process engine bench takes (model, device, dtype, sizes, threads, --out)."""
    parser.add_argument("--model", default=None, help="model folder or HF id; default: the bench demo model")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--prompt-tokens", type=int, default=prompt_tokens)
    parser.add_argument("--new-tokens", type=int, default=new_tokens)
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0: torch's default")
    parser.add_argument("--out", default=None, help="also write the JSON here")


def load_bench_model(args: argparse.Namespace) -> LoadedModel:
    """Apply --threads, then load --model (default: the cached `bench` demo model) on --device/--dtype."""
    if args.threads:
        torch.set_num_threads(args.threads)
    model = args.model or str(demo_model_dir("bench"))
    return load_model(model, device=args.device, dtype=args.dtype, progress=False)


def prompt_ids(lm: LoadedModel, length: int) -> list[int]:
    """A seeded random prompt of `length` token ids starting with BOS (the same on every run)."""
    generator = torch.Generator().manual_seed(0)
    body = torch.randint(8, lm.vocab_size, (length - 1,), generator=generator).tolist()
    return [lm.tokenizer.bos_token_id, *body]


def seconds(action: Callable[[], object]) -> float:
    """Wall seconds `action()` takes."""
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def read_bandwidth(gib: float = 1.0, passes: int = 7) -> float:
    """Bytes per second a full read of a `gib` GiB float32 buffer reaches (best pass)."""
    buffer = torch.ones(int(gib * (1 << 30)) // 4)  # [n] float32
    best = min(seconds(lambda: float(buffer.sum())) for _ in range(passes))
    return buffer.numel() * 4 / best


def loadavg() -> str | None:
    """/proc/loadavg now (None off Linux): every recorded number says how busy the box was."""
    try:
        with open("/proc/loadavg", encoding="ascii") as handle:
            return handle.read().strip()
    except OSError:
        return None


def emit(results: dict, out: str | None) -> int:
    """Print the results as JSON, and write them to `out` too when given; the exit status (0)."""
    text = json.dumps(results, indent=2)
    print(text)
    if out:
        with open(out, "w") as handle:
            handle.write(text + "\n")
    return 0
