"""TorchKVSlot: one sequence's preallocated K/V storage on the model's device (decode/engine_api.KVSlot).

Storage: keys and values [num_layers, kv_heads, capacity, head_dim] each, allocated once when the
sequence is admitted (capacity = prompt + max_tokens), never grown. The prompt arrives layer by
layer through `layer_target`/`commit_layer` (a receiver) or is written by the engine's local prefill
through `write_positions`; decode steps append one position at a time in place.

On the CPU `layer_target` hands out the storage itself: a layer's prompt region is one contiguous
row of bytes per KV head (rows `capacity` positions apart), which a receiver fills in place (one
`recvmsg_into` per layer on the data connection) - no staging, no copy at the commit. On a GPU it
hands out a contiguous pinned staging pair that `commit_layer` copies in with one `copy_` per tensor.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from hybrid_workers.decode.engine_base import SlotBase


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _as_bytes(tensor: torch.Tensor) -> np.ndarray:
    """A writable flat uint8 numpy view of a contiguous CPU tensor (any dtype, bfloat16 included)."""
    return tensor.view(torch.uint8).reshape(-1).numpy()


def as_cpu_tensor(array: Any) -> torch.Tensor:
    """A CPU tensor over `array` (a torch tensor, or anything numpy accepts), without a copy when possible."""
    if isinstance(array, torch.Tensor):
        return array
    return torch.from_numpy(np.ascontiguousarray(array))


class TorchKVSlot(SlotBase):
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
        super().__init__(num_layers, (kv_heads, prompt_len, head_dim), capacity, _dtype_name(dtype))
        self.dtype, self.device = dtype, device
        shape = (num_layers, kv_heads, capacity, head_dim)
        self.keys: torch.Tensor | None = torch.empty(shape, dtype=dtype, device=device)
        self.values: torch.Tensor | None = torch.empty(shape, dtype=dtype, device=device)

    @property
    def nbytes(self) -> int:
        if self.keys is None or self.values is None:
            return 0
        return self.keys.nbytes + self.values.nbytes

    @property
    def released(self) -> bool:
        """True after release()."""
        return self.keys is None

    # ---- storage (SlotBase) ----------------------------------------------------------------------
    def _direct_bytes(self, layer: int) -> tuple[np.ndarray, np.ndarray] | None:
        if self.device.type != "cpu" or self.keys is None or self.values is None:
            return None
        kv_heads = self._layer_shape[0]
        return tuple(  # type: ignore[return-value]  # two arrays
            # [kv_heads, prompt, head_dim] strided view -> bytes [kv_heads, prompt * head_dim * itemsize]
            storage[layer, :, : self._prompt_len].view(torch.uint8).view(kv_heads, -1).numpy()
            for storage in (self.keys, self.values)
        )

    def _new_staging(self) -> tuple[torch.Tensor, torch.Tensor]:
        pin = self.device.type == "cuda"
        keys = torch.empty(self._layer_shape, dtype=self.dtype, pin_memory=pin)  # [kv_heads, prompt, dim]
        values = torch.empty(self._layer_shape, dtype=self.dtype, pin_memory=pin)
        return keys, values

    def _staging_bytes(self, part: torch.Tensor) -> np.ndarray:
        return _as_bytes(part)

    def _commit_staged(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        self._store(layer, keys, values)

    def _as_array(self, array: Any) -> torch.Tensor:
        return as_cpu_tensor(array)

    def _write_arrays(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        self._store(layer, keys.reshape(self._layer_shape), values.reshape(self._layer_shape))

    def _store(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        assert self.keys is not None and self.values is not None
        self.keys[layer, :, : self._prompt_len].copy_(keys, non_blocking=True)  # [kv_heads, prompt, dim]
        self.values[layer, :, : self._prompt_len].copy_(values, non_blocking=True)

    def _drop_storage(self) -> None:
        self.keys = self.values = None

    # ---- the engine's own writes -----------------------------------------------------------------
    def write_positions(self, layer: int, start: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Write K/V [kv_heads, n, head_dim] of positions [start, start + n) of one layer (engine use)."""
        assert self.keys is not None and self.values is not None, "slot released"
        end = start + keys.shape[-2]
        self.keys[layer, :, start:end].copy_(keys)
        self.values[layer, :, start:end].copy_(values)

    def layer_kv(self, layer: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Views of positions [0, length) of one layer: keys, values [1, kv_heads, length, head_dim]."""
        assert self.keys is not None and self.values is not None, "slot released"
        return self.keys[layer, None, :, :length], self.values[layer, None, :, :length]
