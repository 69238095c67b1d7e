"""TorchKVSlot: one sequence's preallocated K/V storage on the model's device (decode/engine_api.KVSlot).

Storage: keys and values [num_layers, kv_heads, capacity, head_dim] each, allocated once when the
sequence is admitted (capacity = prompt + max_tokens), never grown. The prompt arrives layer by
layer through `layer_target`/`commit_layer` (a receiver) or is written by the engine's local prefill
through `write_positions`; decode steps append one position at a time in place.

A layer's prompt region inside the storage is strided (capacity > prompt_len), so `layer_target`
hands out a contiguous staging pair for that layer (pinned on CUDA) and `commit_layer` copies it in
with one `copy_` per tensor; the staging memory is dropped at the commit.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from hybrid_workers.decode.engine_api import LayerTarget


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _as_bytes(tensor: torch.Tensor) -> np.ndarray:
    """A writable flat uint8 numpy view of a contiguous CPU tensor (any dtype, bfloat16 included)."""
    return tensor.view(torch.uint8).reshape(-1).numpy()


def _as_tensor(array: Any) -> torch.Tensor:
    """A CPU tensor over `array` (a torch tensor, or anything numpy accepts), without a copy when possible."""
    if isinstance(array, torch.Tensor):
        return array
    return torch.from_numpy(np.ascontiguousarray(array))


class TorchKVSlot:
    """The torch engine's KVSlot (see decode/engine_api.py for the contract of every method)."""

    def __init__(
        self,
        num_layers: int,
        kv_heads: int,
        head_dim: int,
        prompt_len: int,
        capacity: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        if prompt_len < 1 or capacity < prompt_len:
            raise ValueError(f"prompt_len {prompt_len} must be >= 1 and <= capacity {capacity}")
        self._prompt_len, self._capacity, self._num_layers = prompt_len, capacity, num_layers
        self.dtype, self.device = dtype, device
        shape = (num_layers, kv_heads, capacity, head_dim)
        self.keys: torch.Tensor | None = torch.empty(shape, dtype=dtype, device=device)
        self.values: torch.Tensor | None = torch.empty(shape, dtype=dtype, device=device)
        self._layer_shape = (kv_heads, prompt_len, head_dim)
        self._staging: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._committed = [False] * num_layers

    # ---- facts -----------------------------------------------------------------------------------
    @property
    def prompt_len(self) -> int:
        return self._prompt_len

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def num_layers(self) -> int:
        return self._num_layers

    @property
    def nbytes(self) -> int:
        if self.keys is None or self.values is None:
            return 0
        return self.keys.nbytes + self.values.nbytes

    @property
    def complete(self) -> bool:
        return all(self._committed)

    @property
    def released(self) -> bool:
        """True after release()."""
        return self.keys is None

    # ---- the prompt, from a receiver -------------------------------------------------------------
    def layer_target(self, layer: int) -> LayerTarget:
        self._check_open(layer)
        staging = self._staging.get(layer)
        if staging is None:
            pin = self.device.type == "cuda"
            keys = torch.empty(self._layer_shape, dtype=self.dtype, pin_memory=pin)  # [kv_heads, prompt, dim]
            values = torch.empty(self._layer_shape, dtype=self.dtype, pin_memory=pin)
            staging = self._staging[layer] = (keys, values)
        keys, values = staging
        return LayerTarget(
            layer, _as_bytes(keys), _as_bytes(values), self._layer_shape, _dtype_name(self.dtype)
        )

    def commit_layer(self, layer: int) -> None:
        self._check_open(layer)
        staging = self._staging.pop(layer, None)
        if staging is None:
            raise ValueError(f"layer {layer}: commit without layer_target({layer}); write the layer first")
        self._store(layer, *staging)

    def write_layer(self, layer: int, keys: Any, values: Any) -> None:
        self._check_open(layer)
        keys_t, values_t = _as_tensor(keys), _as_tensor(values)
        for name, tensor in (("keys", keys_t), ("values", values_t)):
            dims = tuple(tensor.shape[1:] if tensor.dim() == 4 and tensor.shape[0] == 1 else tensor.shape)
            if dims != self._layer_shape:
                raise ValueError(
                    f"layer {layer} {name}: shape {tuple(tensor.shape)}, expected {self._layer_shape} "
                    "[kv_heads, prompt_len, head_dim] (optionally with a leading batch of 1)"
                )
        self._staging.pop(layer, None)
        self._store(layer, keys_t.reshape(self._layer_shape), values_t.reshape(self._layer_shape))

    def _store(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        assert self.keys is not None and self.values is not None
        self.keys[layer, :, : self._prompt_len].copy_(keys, non_blocking=True)  # [kv_heads, prompt, dim]
        self.values[layer, :, : self._prompt_len].copy_(values, non_blocking=True)
        self._committed[layer] = True

    # ---- the engine's own writes -----------------------------------------------------------------
    def write_positions(self, layer: int, start: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Write K/V [kv_heads, n, head_dim] of positions [start, start + n) of one layer (engine use)."""
        assert self.keys is not None and self.values is not None, "slot released"
        end = start + keys.shape[-2]
        self.keys[layer, :, start:end].copy_(keys)
        self.values[layer, :, start:end].copy_(values)

    def mark_prefilled(self) -> None:
        """The engine wrote the whole prompt itself (local prefill): every layer counts as committed."""
        self._committed = [True] * self._num_layers

    def layer_kv(self, layer: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Views of positions [0, length) of one layer: keys, values [1, kv_heads, length, head_dim]."""
        assert self.keys is not None and self.values is not None, "slot released"
        return self.keys[layer, None, :, :length], self.values[layer, None, :, :length]

    def release(self) -> None:
        self.keys = self.values = None
        self._staging.clear()

    def _check_open(self, layer: int) -> None:
        if self.keys is None:
            raise ValueError("KV slot already released; the sequence was cancelled or finished")
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < self._num_layers:
            raise ValueError(f"layer index {layer!r}: out of range [0, {self._num_layers})")
        if self._committed[layer]:
            raise ValueError(f"layer {layer}: already committed")
