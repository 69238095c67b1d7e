"""MlxKVSlot: one sequence's KV storage in MLX (the MLX side of decode/engine_api.KVSlot).

Storage: one mlx-lm `KVCache` per layer whose key/value buffers [1, kv_heads, capacity, head_dim]
are allocated once with room for the prompt plus the completion, so a decode step writes one token
in place (mlx-lm's own caches grow in steps of 256 and concatenate). A remote prefill's layers
arrive through `layer_target` (numpy staging bytes the receiver fills) + `commit_layer`, or
`write_layer` with torch tensors; each commit moves the layer into MLX at once, so the conversion
overlaps the transfer of the next layer. The engine's local prefill writes through mlx-lm's
`update_and_fetch` (`ensure_storage` first).

Threads: every MLX call here runs under MlxModel.computing() (the model's lock, which the engine
holds for each forward pass, and the model's device), so a receiver thread's commit never runs MLX
work concurrently with a step.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import numpy as np
import torch
from mlx_lm.models.cache import KVCache

from hybrid_workers.decode.engine_base import SlotBase
from hybrid_workers.engine.kv_slot import as_cpu_tensor
from hybrid_workers.mlx_engine.arrays import to_mx
from hybrid_workers.mlx_engine.loading import MlxModel


def _bytes_to_mx(raw: np.ndarray, shape: tuple[int, ...], dtype: Any) -> mx.array:
    """Raw little-endian element bytes [nbytes] uint8 as an MLX array of `shape` in `dtype` (one copy)."""
    return mx.array(raw).view(dtype).reshape(shape)


class MlxKVSlot(SlotBase):
    """The MLX engine's KVSlot (see decode/engine_api.py for the contract of every method)."""

    def __init__(self, mm: MlxModel, prompt_len: int, capacity: int) -> None:
        if capacity > mm.max_context:
            raise ValueError(f"capacity {capacity}: more than the model's context of {mm.max_context}")
        # [kv_heads, prompt, head_dim] per layer; the bytes are the model's (torch-named) dtype
        layer_shape = (mm.num_kv_heads, prompt_len, mm.head_dim)
        super().__init__(mm.num_layers, layer_shape, capacity, str(mm.dtype).removeprefix("torch."))
        self.mm = mm
        self.caches: list[KVCache] | None = [KVCache() for _ in range(mm.num_layers)]

    @property
    def nbytes(self) -> int:
        """Bytes the slot reserves (keys and values of every layer at full capacity)."""
        per_layer = self.mm.num_kv_heads * self._capacity * self.mm.head_dim * self.mm.dtype.itemsize
        return 2 * self.mm.num_layers * per_layer

    @property
    def released(self) -> bool:
        """True after release()."""
        return self.caches is None

    @property
    def length(self) -> int:
        """Positions held now (prompt plus decoded tokens); 0 before the prompt landed."""
        return int(self._open_caches()[0].offset)

    # ---- storage (SlotBase) ----------------------------------------------------------------------
    def _new_staging(self) -> tuple[np.ndarray, np.ndarray]:
        kv_heads, prompt_len, head_dim = self._layer_shape
        nbytes = kv_heads * prompt_len * head_dim * self.mm.dtype.itemsize
        return np.empty(nbytes, np.uint8), np.empty(nbytes, np.uint8)

    def _staging_bytes(self, part: np.ndarray) -> np.ndarray:
        return part

    def _commit_staged(self, layer: int, keys: np.ndarray, values: np.ndarray) -> None:
        shape = (1, *self._layer_shape)  # [1, kv_heads, prompt, head_dim]
        with self.mm.computing():
            self._store(layer, *(_bytes_to_mx(raw, shape, self.mm.mx_dtype) for raw in (keys, values)))

    def _as_array(self, array: Any) -> torch.Tensor:
        return as_cpu_tensor(array)

    def _write_arrays(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        shape = (1, *self._layer_shape)
        with self.mm.computing():
            keys_mx, values_mx = (to_mx(t.reshape(shape)).astype(self.mm.mx_dtype) for t in (keys, values))
            self._store(layer, keys_mx, values_mx)

    def _store(self, layer: int, keys: mx.array, values: mx.array) -> None:
        """Put the prompt's K/V [1, kv_heads, prompt, head_dim] of one layer into its buffers (lock held)."""
        cache = self._allocate(layer)
        assert cache.keys is not None and cache.values is not None
        cache.keys[:, :, : self._prompt_len, :] = keys
        cache.values[:, :, : self._prompt_len, :] = values
        cache.offset = self._prompt_len
        mx.eval(cache.keys, cache.values)

    def _drop_storage(self) -> None:
        self.caches = None

    # ---- the engine's own use --------------------------------------------------------------------
    def _allocate(self, layer: int) -> KVCache:
        cache = self._open_caches()[layer]
        if cache.keys is None:
            shape = (1, self.mm.num_kv_heads, self._capacity, self.mm.head_dim)
            cache.keys, cache.values = mx.zeros(shape, self.mm.mx_dtype), mx.zeros(shape, self.mm.mx_dtype)
        return cache

    def engine_caches(self) -> list[KVCache]:
        """The per-layer caches with their buffers allocated, for the engine's forward passes (lock held)."""
        return [self._allocate(layer) for layer in range(self.num_layers)]

    def _open_caches(self) -> list[KVCache]:
        if self.caches is None:
            raise ValueError("KV slot already released; the sequence was cancelled or finished")
        return self.caches
