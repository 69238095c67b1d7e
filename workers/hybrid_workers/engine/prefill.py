"""Prefill: one forward pass over the prompt that hands out each layer's K/V the moment it is final."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache

from hybrid_workers.engine.loading import LoadedModel
from hybrid_workers.errors import UserError

# on_layer(layer_index, keys, values); keys/values: [1, kv_heads, seq, head_dim], post-RoPE, as cached.
OnLayer = Callable[[int, torch.Tensor, torch.Tensor], None]


@dataclass(frozen=True)
class PrefillResult:
    """What a prefill leaves behind."""

    logits: torch.Tensor  # [vocab] float32, next-token logits at the last prompt position
    cache: DynamicCache  # K/V of every layer for the whole prompt
    layer_seconds: tuple[float, ...]  # compute time of each decoder layer (excluding on_layer's own time)


def check_token_ids(lm: LoadedModel, token_ids: Sequence[int]) -> torch.Tensor:
    """Validate prompt token ids and return them as a [1, seq] tensor on the model's device."""
    if len(token_ids) == 0:
        raise UserError("prompt: empty; give at least one token")
    if len(token_ids) > lm.max_context:
        raise UserError(f"prompt: {len(token_ids)} tokens exceed the model's context of {lm.max_context}")
    bad = [
        t for t in token_ids if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < lm.vocab_size
    ]
    if bad:
        raise UserError(f"prompt: token id {bad[0]!r} outside the vocabulary [0, {lm.vocab_size})")
    return torch.tensor([list(token_ids)], dtype=torch.long, device=lm.device)  # [1, seq]


def _synchronize(device: torch.device) -> None:
    """Wait for queued kernels on `device` (CPU work is already done when the hook runs)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


class _LayerWatch:
    """Forward hooks on every decoder layer of one model, active for one cache object only."""

    def __init__(self, lm: LoadedModel, cache: DynamicCache, on_layer: OnLayer | None) -> None:
        self.cache, self.on_layer = cache, on_layer
        self.device = lm.device  # on GPUs, per-layer times and "final" need the layer's kernels finished
        self.started = [0.0] * lm.num_layers
        self.seconds = [0.0] * lm.num_layers

    def _ours(self, kwargs: dict[str, Any]) -> bool:
        return kwargs.get("cache") is self.cache  # other forwards on the same model pass by

    def before(self, index: int, kwargs: dict[str, Any]) -> None:
        if self._ours(kwargs):
            self.started[index] = time.perf_counter()

    def after(self, index: int, kwargs: dict[str, Any]) -> None:
        if not self._ours(kwargs):
            return
        _synchronize(self.device)
        self.seconds[index] = time.perf_counter() - self.started[index]
        if self.on_layer is not None:
            layer: Any = self.cache.layers[
                index
            ]  # a DynamicLayer: .keys/.values [1, kv_heads, seq, head_dim]
            self.on_layer(index, layer.keys, layer.values)


@contextmanager
def _watching(lm: LoadedModel, watch: _LayerWatch) -> Iterator[None]:
    """Install the watch's pre/post hooks on each decoder layer for the duration of the block."""
    handles = []
    for index, layer in enumerate(lm.model.model.layers):
        handles.append(
            layer.register_forward_pre_hook(lambda _m, _a, kw, i=index: watch.before(i, kw), with_kwargs=True)
        )
        handles.append(
            layer.register_forward_hook(lambda _m, _a, kw, _o, i=index: watch.after(i, kw), with_kwargs=True)
        )
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def prefill(lm: LoadedModel, token_ids: Sequence[int], on_layer: OnLayer | None = None) -> PrefillResult:
    """Run the prompt through the model, calling `on_layer(i, keys, values)` as each layer finishes.

    Each call happens right after decoder layer i ran and before layer i+1 starts; the tensors are
    the ones stored in the returned cache (not copies): the receiver must not modify them. Exceptions
    raised by on_layer abort the prefill and propagate.
    """
    input_ids = check_token_ids(lm, token_ids)  # [1, seq]
    cache = DynamicCache(config=lm.model.config)
    watch = _LayerWatch(lm, cache, on_layer)
    with _watching(lm, watch), torch.no_grad():
        output = lm.model(input_ids=input_ids, cache=cache, use_cache=True, logits_to_keep=1)
    logits = output.logits[0, -1].float()  # [vocab]
    return PrefillResult(logits=logits, cache=cache, layer_seconds=tuple(watch.seconds))
