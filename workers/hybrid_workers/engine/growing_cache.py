"""A decode-friendly cache layer: K/V live in a preallocated buffer, so appending a token copies one token.

transformers' DynamicLayer appends with torch.cat, which copies the whole layer's K/V on every decode
step (for Llama-3.1-8B at 8k tokens: 1 GiB per token). GrowingLayer reserves room once and writes each
new token in place; `keys`/`values` are views of the filled part, so attention reads exactly the same
numbers.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

_MIN_GROWTH = 256  # tokens added at least when a buffer must grow beyond its reservation


class GrowingLayer(DynamicLayer):
    """A DynamicLayer whose keys/values are views into buffers [batch, kv_heads, capacity, head_dim]."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity
        self._key_buffer: torch.Tensor | None = None
        self._value_buffer: torch.Tensor | None = None

    def _owns_current(self) -> bool:
        """True when keys/values still view our buffers (a crop or offload may have replaced them)."""
        return (
            self._key_buffer is not None
            and self.keys is not None
            and self.keys.untyped_storage().data_ptr() == self._key_buffer.untyped_storage().data_ptr()
        )

    def _reserve(self, needed: int, like: torch.Tensor) -> None:
        """Move the current K/V into buffers holding at least `needed` tokens (one copy)."""
        length = self.get_seq_length()
        capacity = max(needed, self.capacity, length + _MIN_GROWTH, length + length // 2)
        shape = (*like.shape[:2], capacity, like.shape[-1])  # [batch, kv_heads, capacity, head_dim]
        keys = torch.empty(shape, dtype=like.dtype, device=like.device)
        values = torch.empty(shape, dtype=like.dtype, device=like.device)
        if length and self.keys is not None and self.values is not None:
            keys[:, :, :length].copy_(self.keys)
            values[:, :, :length].copy_(self.values)
        self._key_buffer, self._value_buffer, self.capacity = keys, values, capacity
        self.keys, self.values = keys[:, :, :length], values[:, :, :length]

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object, **kwargs: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append key_states/value_states [batch, kv_heads, new, head_dim]; return all K/V so far (views)."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start = self.get_seq_length()
        end = start + key_states.shape[-2]
        if not self._owns_current() or end > self.capacity:
            self._reserve(end, key_states)
        assert self._key_buffer is not None and self._value_buffer is not None
        self._key_buffer[:, :, start:end].copy_(key_states)
        self._value_buffer[:, :, start:end].copy_(value_states)
        self.keys, self.values = self._key_buffer[:, :, :end], self._value_buffer[:, :, :end]
        return self.keys, self.values


def reserve(cache: DynamicCache, capacity: int) -> None:
    """Turn every plain DynamicLayer of `cache` into a GrowingLayer with room for `capacity` tokens.

    Copies each layer's K/V once into its new buffer; the original tensors are left untouched (they
    may still be in flight to another worker).
    """
    for index, layer in enumerate(cache.layers):
        keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
        if type(layer) is not DynamicLayer or keys is None or values is None:
            continue  # already growing, sliding-window, or empty: leave as is
        growing = GrowingLayer(capacity)
        growing.lazy_initialization(keys, values)
        growing.keys, growing.values = keys, values
        growing._reserve(capacity, keys)
        cache.layers[index] = growing
