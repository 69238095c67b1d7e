"""One sequence's KV cache in MLX: the place received (or locally computed) K/V lands, layer by layer.

Each layer is an mlx-lm `KVCache` whose key/value buffers are allocated once with room for the
prompt plus the completion (`capacity`), so a decode step writes one token in place instead of
growing the buffer. A remote prefill's layers are written as they arrive (`add_layer`, any order, as
engine.CacheBuilder accepts them) and evaluated at once, so the conversion overlaps the transfer of
the next layer; decode starts when `missing_layers()` is empty.
"""

from __future__ import annotations

import mlx.core as mx
import torch
from mlx_lm.models.cache import KVCache

from hybrid_workers.mlx_engine.arrays import to_mx
from hybrid_workers.mlx_engine.loading import MlxModel


class MlxKVSlot:
    """Per-layer KVCache objects of one sequence, preallocated to `capacity` positions."""

    def __init__(self, mm: MlxModel, capacity: int) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or not 0 < capacity <= mm.max_context:
            raise ValueError(f"capacity {capacity!r}: must be in 1..{mm.max_context} (the model's context)")
        self.mm = mm
        self.capacity = capacity
        shape = (1, mm.num_kv_heads, capacity, mm.head_dim)  # [batch, kv_heads, capacity, head_dim]
        self.caches: list[KVCache] = []
        for _ in range(mm.num_layers):
            cache = KVCache()
            cache.keys, cache.values = mx.zeros(shape, mm.mx_dtype), mx.zeros(shape, mm.mx_dtype)
            self.caches.append(cache)
        self._written: set[int] = set()
        self._length: int | None = None  # prompt positions every written layer holds

    @property
    def num_layers(self) -> int:
        return self.mm.num_layers

    def add_layer(self, index: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Write layer `index` of the prompt: keys and values [1, kv_heads, seq, head_dim] (torch, any device).

        ValueError for an index out of range, a layer given twice, a shape that is not this model's or
        that disagrees with earlier layers, or a prompt longer than the capacity. The tensors are copied.
        """
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < self.num_layers:
            raise ValueError(f"layer index {index!r}: out of range [0, {self.num_layers})")
        if index in self._written:
            raise ValueError(f"layer {index}: already added")
        self._check_shape(index, keys, values)
        seq = int(keys.shape[2])
        cache = self.caches[index]
        assert cache.keys is not None and cache.values is not None
        with self.mm.lock:  # MLX work of one model stays on one thread at a time
            cache.keys[:, :, :seq, :] = to_mx(keys).astype(self.mm.mx_dtype)
            cache.values[:, :, :seq, :] = to_mx(values).astype(self.mm.mx_dtype)
            cache.offset = seq
            mx.eval(cache.keys, cache.values)
        self._written.add(index)
        self._length = seq

    def _check_shape(self, index: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        expected = (1, self.mm.num_kv_heads, self._length or keys.shape[2], self.mm.head_dim)
        if tuple(keys.shape) != expected or tuple(values.shape) != expected:
            raise ValueError(
                f"layer {index}: keys {tuple(keys.shape)} / values {tuple(values.shape)}, expected "
                f"{expected} [batch, kv_heads, seq, head_dim] (same seq in every layer)"
            )
        if expected[2] > self.capacity:
            raise ValueError(f"layer {index}: {expected[2]} positions exceed the slot's capacity {self.capacity}")

    def missing_layers(self) -> list[int]:
        """Indices of the layers not written yet, ascending."""
        return [i for i in range(self.num_layers) if i not in self._written]

    def build(self) -> MlxKVSlot:
        """This slot, once every layer is written (ValueError otherwise); mirrors CacheBuilder.build."""
        missing = self.missing_layers()
        if missing:
            raise ValueError(f"cache incomplete: layers {missing} missing")
        return self

    def mark_filled(self, length: int) -> None:
        """Record that a local prefill filled every layer with `length` positions (via update_and_fetch)."""
        self._written = set(range(self.num_layers))
        self._length = length

    @property
    def length(self) -> int:
        """Positions held (prompt plus generated tokens so far)."""
        return int(self.caches[0].offset)
