"""The bookkeeping every engine shares behind decode/engine_api: slot state and request checks.

`SlotBase` keeps a KVSlot's facts and per-layer state machine (targeted -> committed, released) and
validates every call, so an engine's slot only says how its storage is allocated, written and freed.
`EngineBase` sizes KV per token and checks `new_slot`/`prefill_chunk` arguments against the model's
geometry. Neither imports torch or mlx: the torch engine (engine/) and the MLX engine (mlx_engine/)
subclass them with their own storage.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from hybrid_workers.decode.engine_api import KVSlot, LayerTarget


class SlotBase(ABC):
    """A KVSlot's state and checks (see decode/engine_api.KVSlot for the contract of every method).

    A subclass provides the storage: `_direct_bytes` (the storage's own bytes of one layer, when a
    receiver may write there: nothing to copy at the commit), else `_new_staging` (a writable pair for
    one layer), `_staging_bytes` (its raw bytes as numpy uint8), `_commit_staged` (copy a staged pair
    in); `_as_array` and `_write_arrays` (copy a whole layer given as arrays in), `_drop_storage`,
    `released` and `nbytes`.
    """

    def __init__(self, num_layers: int, layer_shape: tuple[int, int, int], capacity: int, dtype: str) -> None:
        prompt_len = layer_shape[1]
        if prompt_len < 1 or capacity < prompt_len:
            raise ValueError(f"prompt_len {prompt_len} must be >= 1 and <= capacity {capacity}")
        self._prompt_len, self._capacity, self._num_layers = prompt_len, capacity, num_layers
        self._layer_shape = layer_shape  # (kv_heads, prompt_len, head_dim)
        self._dtype_name = dtype  # float32 | bfloat16 | float16: the bytes' element type
        self._staging: dict[int, tuple[Any, Any]] = {}
        self._direct: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # targets in the storage itself
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
    def complete(self) -> bool:
        return all(self._committed)

    @property
    @abstractmethod
    def released(self) -> bool:
        """True after release()."""

    @property
    @abstractmethod
    def nbytes(self) -> int:
        """Bytes of KV storage the slot holds."""

    # ---- the prompt, from a receiver -------------------------------------------------------------
    def layer_target(self, layer: int) -> LayerTarget:
        self._check_open(layer)
        direct = self._direct.get(layer)
        if direct is None and layer not in self._staging:
            direct = self._direct_bytes(layer)
            if direct is not None:
                self._direct[layer] = direct
        if direct is not None:
            keys, values = direct
        else:
            staging = self._staging.get(layer)
            if staging is None:
                staging = self._staging[layer] = self._new_staging()
            keys, values = (self._staging_bytes(part) for part in staging)
        return LayerTarget(layer, keys, values, self._layer_shape, self._dtype_name)

    def commit_layer(self, layer: int) -> None:
        self._check_open(layer)
        if self._direct.pop(layer, None) is None:
            staging = self._staging.pop(layer, None)
            if staging is None:
                raise ValueError(
                    f"layer {layer}: commit without layer_target({layer}); write the layer first"
                )
            self._commit_staged(layer, *staging)
        self._committed[layer] = True

    def write_layer(self, layer: int, keys: Any, values: Any) -> None:
        self._check_open(layer)
        keys, values = self._as_array(keys), self._as_array(values)
        for name, array in (("keys", keys), ("values", values)):
            shape = tuple(array.shape)
            dims = shape[1:] if len(shape) == 4 and shape[0] == 1 else shape
            if dims != self._layer_shape:
                raise ValueError(
                    f"layer {layer} {name}: shape {shape}, expected {self._layer_shape} "
                    "[kv_heads, prompt_len, head_dim] (optionally with a leading batch of 1)"
                )
        self._staging.pop(layer, None)
        self._direct.pop(layer, None)
        self._write_arrays(layer, keys, values)
        self._committed[layer] = True

    def mark_prefilled(self) -> None:
        """The engine wrote the whole prompt itself (local prefill): every layer counts as committed."""
        self._committed = [True] * self._num_layers

    def release(self) -> None:
        self._drop_storage()
        self._staging.clear()
        self._direct.clear()

    def _check_open(self, layer: int) -> None:
        if self.released:
            raise ValueError("KV slot already released; the sequence was cancelled or finished")
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < self._num_layers:
            raise ValueError(f"layer index {layer!r}: out of range [0, {self._num_layers})")
        if self._committed[layer]:
            raise ValueError(f"layer {layer}: already committed")

    # ---- the engine's storage --------------------------------------------------------------------
    def _direct_bytes(self, layer: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Layer `layer`'s prompt region of the storage as writable uint8 arrays (LayerTarget's flat or
        row-strided form), or None when a receiver must not write there (then: staging)."""
        return None

    @abstractmethod
    def _new_staging(self) -> tuple[Any, Any]:
        """A fresh writable (keys, values) pair for one layer's prompt K/V."""

    @abstractmethod
    def _staging_bytes(self, part: Any) -> np.ndarray:
        """One staged buffer as a writable flat uint8 numpy array over the same memory."""

    @abstractmethod
    def _commit_staged(self, layer: int, keys: Any, values: Any) -> None:
        """Copy a fully written staged pair into layer `layer`'s storage."""

    @abstractmethod
    def _as_array(self, array: Any) -> Any:
        """`array` (the engine's own array type, or anything numpy accepts) as one with a `.shape`."""

    @abstractmethod
    def _write_arrays(self, layer: int, keys: Any, values: Any) -> None:
        """Copy a whole layer [(1,) kv_heads, prompt_len, head_dim] given as arrays into its storage."""

    @abstractmethod
    def _drop_storage(self) -> None:
        """Free the storage; `released` is True afterwards."""


class ModelGeometry(Protocol):
    """The facts of a loaded model that size KV (engine.loading.ModelFacts has them)."""

    @property
    def num_layers(self) -> int: ...

    @property
    def num_kv_heads(self) -> int: ...

    @property
    def head_dim(self) -> int: ...

    @property
    def max_context(self) -> int: ...

    @property
    def dtype(self) -> Any: ...  # a torch.dtype: its itemsize sizes one element


class EngineBase:
    """KV sizing and argument checks shared by the DecodeEngine implementations."""

    def __init__(self, model: ModelGeometry) -> None:
        self.geometry = model

    @property
    def kv_bytes_per_token(self) -> int:
        g = self.geometry
        return 2 * g.num_layers * g.num_kv_heads * g.head_dim * g.dtype.itemsize

    def slot_capacity(self, prompt_len: int, max_tokens: int) -> int:
        """Positions a new slot holds; ValueError when the request cannot fit the model's context."""
        context = self.geometry.max_context
        if prompt_len < 1 or max_tokens < 0 or prompt_len + max_tokens > context:
            raise ValueError(
                f"prompt_len {prompt_len} + max_tokens {max_tokens}: need prompt_len >= 1 and a sum "
                f"within the model's context of {context}"
            )
        # +1: the last sampled token is never appended, but a step may append up to max_tokens positions
        return min(context, prompt_len + max(1, max_tokens))

    @staticmethod
    def chunk_end(slot: KVSlot, token_ids: Sequence[int], start: int) -> int:
        """The end of prefill chunk [start, start + len(token_ids)); ValueError outside the prompt."""
        end = start + len(token_ids)
        if not 0 <= start < end <= slot.prompt_len:
            raise ValueError(f"chunk [{start}, {end}) outside the prompt of {slot.prompt_len} positions")
        return end
