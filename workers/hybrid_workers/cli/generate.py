"""`hybrid-inference generate`: one completion on this machine, streamed to stdout, then TTFT and TPS."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

from hybrid_workers.errors import UserError
from hybrid_workers.options import add_model_options, add_option


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `generate` command."""
    parser = subparsers.add_parser(
        "generate",
        help="generate one completion locally (default model: SmolLM2-135M-Instruct, see --model)",
        description="Prefills the prompt, decodes the completion on this machine and prints it to "
        "stdout; then prints time to first token and decode tokens per second to stderr.",
    )
    parser.add_argument("--prompt", required=True, help="the prompt text")
    add_option(parser, "--max-tokens", default=64, type=int, help="tokens to generate at most")
    add_option(parser, "--temperature", default=1.0, type=float, help="0 = greedy")
    add_option(parser, "--top-k", default=0, type=int, help="sample among the k most likely tokens; 0 = off")
    add_option(parser, "--top-p", default=1.0, type=float, help="nucleus sampling mass in (0, 1]")
    add_option(parser, "--seed", default=None, type=int, help="random seed; same seed, same completion")
    parser.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    add_option(parser, "--threads", default=0, type=int, help="torch CPU threads; 0 = torch's default")
    add_model_options(parser)
    parser.set_defaults(func=run)


@dataclass(frozen=True)
class Timing:
    """When a completion's tokens arrived, relative to the request's start."""

    first_token_seconds: float  # TTFT: prefill plus the first sample
    last_token_seconds: float
    tokens: int

    @property
    def decode_tokens_per_second(self) -> float:
        """Tokens after the first per second of decoding (0 when fewer than two tokens)."""
        span = self.last_token_seconds - self.first_token_seconds
        return (self.tokens - 1) / span if self.tokens > 1 and span > 0 else 0.0


def _params(args: argparse.Namespace):  # -> SamplingParams
    from hybrid_workers.engine import SamplingParams

    return SamplingParams(
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=None if args.seed is None else int(args.seed),
        stop=tuple(args.stop),
    )


def _stream(lm, prompt_ids: list[int], params) -> tuple[Timing, str]:
    """Print the completion as it is generated; return its timing and finish reason."""
    from hybrid_workers.engine import stream_completion

    start = time.perf_counter()
    first = last = 0.0
    tokens, finish = 0, "length"
    for step in stream_completion(lm, prompt_ids, params):
        last = time.perf_counter() - start
        first = first or last
        tokens += 1
        finish = step.finish_reason or finish
        sys.stdout.write(step.text)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return Timing(first, last, tokens), finish


def run(args: argparse.Namespace) -> int:
    """Load the model, stream the completion to stdout, report timing on stderr."""
    import torch

    from hybrid_workers.engine import encode_prompt, load_model

    params = _params(args)
    if args.threads < 0:
        raise UserError(f"--threads {args.threads}: must be >= 0 (0 = torch's default)")
    if not args.prompt:
        raise UserError("--prompt '': empty; give some text")
    if args.threads:
        torch.set_num_threads(args.threads)
    lm = load_model(args.model, device=args.device, dtype=args.dtype)
    prompt_ids = encode_prompt(lm, args.prompt, params.max_tokens)
    timing, finish = _stream(lm, prompt_ids, params)
    dtype = str(lm.dtype).removeprefix("torch.")
    print(
        f"[{lm.name} on {lm.device.type}, {dtype}] prompt {len(prompt_ids)} tokens, completion "
        f"{timing.tokens} tokens (finish: {finish}); TTFT {timing.first_token_seconds * 1000:.1f} ms, "
        f"decode {timing.decode_tokens_per_second:.1f} tokens/s",
        file=sys.stderr,
    )
    return 0
