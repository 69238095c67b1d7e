"""The decode engine behind `--engine torch|mlx|auto`: which one runs, loading it, and its per-request calls.

`auto` picks MLX on macOS on Apple silicon when `mlx` and `mlx-lm` are installed (the `[mlx]` extra),
torch everywhere else. Nothing here imports MLX unless the MLX engine was chosen. Both engines give a
model object with the same facts (name, tokenizer, fingerprint, layer shape, dtype, context, EOS ids);
the functions below dispatch on its `engine` attribute. Everything else (the batch loop, the KV
receiver writing into slots) talks to decode/engine_api.DecodeEngine only, so it has one path for both.
"""

from __future__ import annotations

import importlib.util
import platform
import sys
import threading
import weakref
from collections.abc import Sequence
from typing import Any

from hybrid_workers.decode.engine_api import DecodeEngine
from hybrid_workers.enums import ComputeDevice, Engine
from hybrid_workers.errors import UserError

_ENGINES: weakref.WeakKeyDictionary[Any, DecodeEngine] = weakref.WeakKeyDictionary()
_ENGINES_GUARD = threading.Lock()
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


def load_decode_model(
    engine: Engine, model: str | None, device: str, dtype: str, progress: bool = True
) -> Any:
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

        return mlx_compute_device(lm.compute)
    return ComputeDevice(lm.device.type)


def decode_engine(lm: Any) -> DecodeEngine:
    """The DecodeEngine of a loaded model (one per model object, created on first use)."""
    with _ENGINES_GUARD:
        engine = _ENGINES.get(lm)
        if engine is None:
            engine = _ENGINES[lm] = _new_engine(lm)
        return engine


def _new_engine(lm: Any) -> DecodeEngine:
    if engine_of(lm) is Engine.MLX:
        from hybrid_workers.mlx_engine.engine import MlxDecodeEngine

        return MlxDecodeEngine(lm)
    from hybrid_workers.engine.batched import TorchDecodeEngine

    return TorchDecodeEngine(lm)


def score_tokens(lm: Any, token_ids: Sequence[int], top: int) -> Any:
    """Teacher-forced logprobs of `token_ids` with `top` alternatives (decode.logprobs.TokenScore list)."""
    if engine_of(lm) is Engine.MLX:
        from hybrid_workers.mlx_engine.scoring import score_tokens as mlx_score

        return mlx_score(lm, token_ids, top)
    from hybrid_workers.decode.logprobs import score_tokens as torch_score

    return torch_score(lm, token_ids, top)
