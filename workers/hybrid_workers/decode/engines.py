"""The decode engine behind `--engine torch|mlx|auto`: which one runs, loading it, and its per-request calls.

`auto` picks MLX on macOS on Apple silicon when `mlx` and `mlx-lm` are installed (the `[mlx]` extra),
torch everywhere else. Nothing here imports MLX unless the MLX engine was chosen. Both engines give a
model object with the same facts (name, tokenizer, fingerprint, layer shape, dtype, context, EOS ids);
the functions below dispatch on its `engine` attribute, so the decode worker, the prefill client and
the KV receiver have one path for both.
"""

from __future__ import annotations

import importlib.util
import platform
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from hybrid_workers.engine.sampling import SamplingParams
from hybrid_workers.enums import ComputeDevice, Engine
from hybrid_workers.errors import UserError

MLX_INSTALL_HINT = "pip install 'hybrid-inference[mlx]' (or: pip install 'mlx[cpu]' mlx-lm on Linux)"


def mlx_installed() -> bool:
    """True when both mlx and mlx-lm can be imported (checked without importing them)."""
    return all(importlib.util.find_spec(name) is not None for name in ("mlx", "mlx_lm"))


def apple_silicon() -> bool:
    """True on macOS on an arm64 (Apple silicon) machine."""
    return sys.platform == "darwin" and platform.machine() == "arm64"


def resolve_engine(engine: str | Engine) -> Engine:
    """`auto` -> mlx on Apple silicon with MLX installed, else torch; `mlx` must be installed."""
    if str(engine) not in {e.value for e in Engine}:
        raise UserError(f"--engine {engine}: unknown engine; use one of {', '.join(e.value for e in Engine)}")
    chosen = Engine(str(engine))
    if chosen is Engine.AUTO:
        return Engine.MLX if apple_silicon() and mlx_installed() else Engine.TORCH
    if chosen is Engine.MLX and not mlx_installed():
        raise UserError(f"--engine mlx: mlx and mlx-lm are not installed; {MLX_INSTALL_HINT}")
    return chosen


def engine_of(lm: Any) -> Engine:
    """The engine a loaded model belongs to (the MLX model says so; everything else is torch)."""
    return Engine(getattr(lm, "engine", Engine.TORCH))


def load_decode_model(engine: Engine, model: str | None, device: str, dtype: str, progress: bool = True) -> Any:
    """Load `model` for `engine` (already resolved): engine.LoadedModel or mlx_engine.MlxModel."""
    if engine is Engine.MLX:
        from hybrid_workers.mlx_engine.loading import load_mlx_model, use_device

        use_device(str(device))
        return load_mlx_model(model, dtype=str(dtype))
    from hybrid_workers.engine import load_model

    return load_model(model, device=str(device), dtype=str(dtype), progress=progress)


def compute_device(lm: Any) -> ComputeDevice:
    """What the engine computes on, in the words agents and planner profiles use."""
    if engine_of(lm) is Engine.MLX:
        from hybrid_workers.mlx_engine.loading import mlx_compute_device

        return mlx_compute_device()
    return ComputeDevice(lm.device.type)


def kv_destination(lm: Any, prompt_len: int, max_tokens: int) -> Any:
    """Where a remote prefill's layers land: add_layer(i, keys, values), missing_layers(), build()."""
    if engine_of(lm) is Engine.MLX:
        from hybrid_workers.mlx_engine.decode import capacity_for
        from hybrid_workers.mlx_engine.kv_slot import MlxKVSlot

        return MlxKVSlot(lm, capacity_for(lm, prompt_len, max_tokens))
    from hybrid_workers.engine.cache import CacheBuilder

    return CacheBuilder(lm)


def token_stream(
    lm: Any, prompt_ids: Sequence[int], params: SamplingParams, first: Any
) -> Iterator[tuple[int, float]] | None:
    """The (token, logprob) stream of a non-torch engine for engine.stream_completion; None for torch."""
    if engine_of(lm) is Engine.MLX:
        from hybrid_workers.mlx_engine.decode import token_stream as mlx_tokens

        return mlx_tokens(lm, prompt_ids, params, first)
    return None


def score_tokens(lm: Any, token_ids: Sequence[int], top: int) -> Any:
    """Teacher-forced logprobs of `token_ids` with `top` alternatives (decode.logprobs.TokenScore list)."""
    if engine_of(lm) is Engine.MLX:
        from hybrid_workers.mlx_engine.scoring import score_tokens as mlx_score

        return mlx_score(lm, token_ids, top)
    from hybrid_workers.decode.logprobs import score_tokens as torch_score

    return torch_score(lm, token_ids, top)
