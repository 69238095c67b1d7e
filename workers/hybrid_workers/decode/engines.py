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
import threading
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

from hybrid_workers.decode.engine_api import DecodeEngine, KVSlot
from hybrid_workers.engine.sampling import SamplingParams
from hybrid_workers.enums import ComputeDevice, Engine
from hybrid_workers.errors import UserError

PREFILL_CHUNK = 512  # prompt tokens per forward pass of a local prefill (bounds activation memory)
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

        return mlx_compute_device()
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


def kv_destination(lm: Any, prompt_len: int, max_tokens: int) -> Any:
    """Where a remote prefill's layers land: add_layer(i, keys, values), missing_layers(), build().

    The torch engine's per-request path still rebuilds a transformers cache (engine.CacheBuilder);
    other engines get a KVSlot of their DecodeEngine, filled through the same calls.
    """
    if engine_of(lm) is Engine.TORCH:
        from hybrid_workers.engine.cache import CacheBuilder

        return CacheBuilder(lm)
    return SlotBuilder(decode_engine(lm).new_slot(prompt_len, max_tokens))


class SlotBuilder:
    """engine.CacheBuilder's calls (add_layer, missing_layers, build) on a KVSlot."""

    def __init__(self, slot: KVSlot) -> None:
        self.slot = slot
        self._added: set[int] = set()

    def add_layer(self, index: int, keys: Any, values: Any) -> None:
        self.slot.write_layer(index, keys, values)
        self._added.add(index)

    def missing_layers(self) -> list[int]:
        return [i for i in range(self.slot.num_layers) if i not in self._added]

    def build(self) -> KVSlot:
        """The slot, once every layer is written; ValueError otherwise."""
        if not self.slot.complete:
            raise ValueError(f"cache incomplete: layers {self.missing_layers()} missing")
        return self.slot


def token_stream(
    lm: Any, prompt_ids: Sequence[int], params: SamplingParams, first: Any
) -> Iterator[tuple[int, float]] | None:
    """The (token, logprob) stream of a non-torch engine for engine.stream_completion; None for torch."""
    if engine_of(lm) is Engine.TORCH:
        return None
    return engine_token_stream(decode_engine(lm), prompt_ids, params, first)


def engine_token_stream(
    engine: DecodeEngine,
    prompt_ids: Sequence[int],
    params: SamplingParams,
    first: tuple[Any, int, float] | None,
) -> Iterator[tuple[int, float]]:
    """(token, logprob) of steps 0, 1, 2, ... of one sequence on any DecodeEngine.

    The first token comes from `first` (slot, token, logprob) of a remote prefill, or from a local
    prefill run in chunks of PREFILL_CHUNK tokens. Ends when the slot is full; releases the slot
    when the iterator is closed or dropped.
    """
    if first is None:
        slot = engine.new_slot(len(prompt_ids), params.max_tokens)
        logits = None
        for start in range(0, len(prompt_ids), PREFILL_CHUNK):
            logits = engine.prefill_chunk(slot, prompt_ids[start : start + PREFILL_CHUNK], start)
        token, logprob = engine.sample(logits, params, 0)
    else:
        slot, token, logprob = first
    try:
        yield token, logprob
        position, step = slot.prompt_len, 1
        while position < slot.capacity:
            [row] = engine.step([(slot, token, position)])
            token, logprob = engine.sample(row, params, step)
            yield token, logprob
            position, step = position + 1, step + 1
    finally:
        slot.release()


def score_tokens(lm: Any, token_ids: Sequence[int], top: int) -> Any:
    """Teacher-forced logprobs of `token_ids` with `top` alternatives (decode.logprobs.TokenScore list)."""
    if engine_of(lm) is Engine.MLX:
        from hybrid_workers.mlx_engine.scoring import score_tokens as mlx_score

        return mlx_score(lm, token_ids, top)
    from hybrid_workers.decode.logprobs import score_tokens as torch_score

    return torch_score(lm, token_ids, top)
