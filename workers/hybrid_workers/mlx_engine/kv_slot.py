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

from hybrid_workers.decode.engine_api import LayerTarget
from hybrid_workers.mlx_engine.arrays import to_mx
from hybrid_workers.mlx_engine.loading import MlxModel


def _bytes_to_mx(raw: np.ndarray, shape: tuple[int, ...], dtype: Any) -> mx.array:
    """Raw little-endian element bytes [nbytes] uint8 as an MLX array of `shape` in `dtype` (one copy)."""
    return mx.array(raw).view(dtype).reshape(shape)


class MlxKVSlot:
    """The MLX engine's KVSlot (see decode/engine_api.py for the contract of every method)."""

    def __init__(self, mm: MlxModel, prompt_len: int, capacity: int) -> None:
        if prompt_len < 1 or not prompt_len <= capacity <= mm.max_context:
            raise ValueError(
                f"prompt_len {prompt_len}, capacity {capacity}: need 1 <= prompt_len <= capacity <= "
                f"{mm.max_context} (the model's context)"
            )
        self.mm = mm
        self._prompt_len, self._capacity = prompt_len, capacity
        self._layer_shape = (mm.num_kv_heads, prompt_len, mm.head_dim)  # [kv_heads, prompt, head_dim]
        self.caches: list[KVCache] | None = [KVCache() for _ in range(mm.num_layers)]
        self._staging: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._committed = [False] * mm.num_layers

    # ---- facts -----------------------------------------------------------------------------------
    @property
    def prompt_len(self) -> int:
        return self._prompt_len

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def num_layers(self) -> int:
        return self.mm.num_layers

    @property
    def nbytes(self) -> int:
        """Bytes the slot reserves (keys and values of every layer at full capacity)."""
        per_layer = self.mm.num_kv_heads * self._capacity * self.mm.head_dim * self.mm.dtype.itemsize
        return 2 * self.mm.num_layers * per_layer

    @property
    def complete(self) -> bool:
        return all(self._committed)

    @property
    def released(self) -> bool:
        """True after release()."""
        return self.caches is None

    @property
    def length(self) -> int:
        """Positions held now (prompt plus decoded tokens); 0 before the prompt landed."""
        return int(self._open_caches()[0].offset)

    # ---- the prompt, from a receiver -------------------------------------------------------------
    def layer_target(self, layer: int) -> LayerTarget:
        self._check_open(layer)
        staging = self._staging.get(layer)
        if staging is None:
            kv_heads, prompt_len, head_dim = self._layer_shape
            nbytes = kv_heads * prompt_len * head_dim * self.mm.dtype.itemsize
            staging = self._staging[layer] = (np.empty(nbytes, np.uint8), np.empty(nbytes, np.uint8))
        keys, values = staging
        return LayerTarget(layer, keys, values, self._layer_shape, self._dtype_name)

    def commit_layer(self, layer: int) -> None:
        self._check_open(layer)
        staging = self._staging.pop(layer, None)
        if staging is None:
            raise ValueError(f"layer {layer}: commit without layer_target({layer}); write the layer first")
        with self.mm.computing():
            shape = (1, *self._layer_shape)  # [1, kv_heads, prompt, head_dim]
            keys, values = (_bytes_to_mx(raw, shape, self.mm.mx_dtype) for raw in staging)
            self._store(layer, keys, values)

    def write_layer(self, layer: int, keys: Any, values: Any) -> None:
        self._check_open(layer)
        tensors = [_as_tensor(keys), _as_tensor(values)]
        for name, tensor in zip(("keys", "values"), tensors, strict=True):
            dims = tuple(tensor.shape[1:] if tensor.dim() == 4 and tensor.shape[0] == 1 else tensor.shape)
            if dims != self._layer_shape:
                raise ValueError(
                    f"layer {layer} {name}: shape {tuple(tensor.shape)}, expected {self._layer_shape} "
                    "[kv_heads, prompt_len, head_dim] (optionally with a leading batch of 1)"
                )
        self._staging.pop(layer, None)
        shape = (1, *self._layer_shape)
        with self.mm.computing():
            keys_mx, values_mx = (to_mx(t.reshape(shape)).astype(self.mm.mx_dtype) for t in tensors)
            self._store(layer, keys_mx, values_mx)

    def _store(self, layer: int, keys: mx.array, values: mx.array) -> None:
        """Put the prompt's K/V [1, kv_heads, prompt, head_dim] of one layer into its buffers (lock held)."""
        cache = self._allocate(layer)
        assert cache.keys is not None and cache.values is not None
        cache.keys[:, :, : self._prompt_len, :] = keys
        cache.values[:, :, : self._prompt_len, :] = values
        cache.offset = self._prompt_len
        mx.eval(cache.keys, cache.values)
        self._committed[layer] = True

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

    def mark_prefilled(self) -> None:
        """The engine wrote the whole prompt itself (local prefill): every layer counts as committed."""
        self._committed = [True] * self.num_layers

    def release(self) -> None:
        self.caches = None
        self._staging.clear()

    @property
    def _dtype_name(self) -> str:
        return str(self.mm.dtype).removeprefix("torch.")

    def _open_caches(self) -> list[KVCache]:
        if self.caches is None:
            raise ValueError("KV slot already released; the sequence was cancelled or finished")
        return self.caches

    def _check_open(self, layer: int) -> None:
        self._open_caches()
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < self.num_layers:
            raise ValueError(f"layer index {layer!r}: out of range [0, {self.num_layers})")
        if self._committed[layer]:
            raise ValueError(f"layer {layer}: already committed")


def _as_tensor(array: Any) -> torch.Tensor:
    """A CPU torch tensor over `array` (a torch tensor, or anything numpy accepts)."""
    if isinstance(array, torch.Tensor):
        return array
    return torch.from_numpy(np.ascontiguousarray(array))
