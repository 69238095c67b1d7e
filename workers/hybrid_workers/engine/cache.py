"""CacheBuilder: assemble a transformers DynamicCache from per-layer K/V tensors arriving in any order."""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from hybrid_workers.engine.loading import LoadedModel


class CacheBuilder:
    """Collects complete layers (keys and values of the whole prompt) and builds the cache once all arrived.

    The tensors are stored as given: the built cache holds them without a copy, so the caller must
    hand over tensors it will not modify afterwards.
    """

    def __init__(self, lm_or_num_layers: LoadedModel | int) -> None:
        count = lm_or_num_layers if isinstance(lm_or_num_layers, int) else lm_or_num_layers.num_layers
        if isinstance(count, bool) or count < 1:
            raise ValueError(f"num_layers {count!r}: must be a positive integer")
        self.num_layers = count
        self._layers: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def add_layer(self, index: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Record layer `index`: keys and values [1, kv_heads, seq, head_dim] on the decode device.

        Raises ValueError for an index out of range, a layer given twice, or shapes that disagree
        with each other or with layers already added.
        """
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < self.num_layers:
            raise ValueError(f"layer index {index!r}: out of range [0, {self.num_layers})")
        if index in self._layers:
            raise ValueError(f"layer {index}: already added")
        if keys.dim() != 4 or keys.shape[:3] != values.shape[:3]:
            raise ValueError(
                f"layer {index}: keys {tuple(keys.shape)} / values {tuple(values.shape)} "
                "must be [batch, kv_heads, seq, head_dim] with matching batch, heads and seq"
            )
        self._check_consistent(index, keys, values)
        self._layers[index] = (keys, values)

    def _check_consistent(self, index: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """All layers must agree on shape, dtype and device (one prompt, one model)."""
        if not self._layers:
            return
        ref_keys, ref_values = next(iter(self._layers.values()))
        same = (keys.shape, values.shape, keys.dtype, keys.device) == (
            ref_keys.shape,
            ref_values.shape,
            ref_keys.dtype,
            ref_keys.device,
        )
        if not same:
            raise ValueError(
                f"layer {index}: keys {tuple(keys.shape)} {keys.dtype} on {keys.device} differ from "
                f"earlier layers' {tuple(ref_keys.shape)} {ref_keys.dtype} on {ref_keys.device}"
            )

    def missing_layers(self) -> list[int]:
        """Indices of the layers not added yet, ascending."""
        return [i for i in range(self.num_layers) if i not in self._layers]

    def build(self) -> DynamicCache:
        """The cache holding every layer; raises ValueError while layers are missing."""
        missing = self.missing_layers()
        if missing:
            raise ValueError(f"cache incomplete: layers {missing} missing")
        cache = DynamicCache()
        for index in range(self.num_layers):
            keys, values = self._layers[index]
            layer = DynamicLayer()
            layer.lazy_initialization(keys, values)
            layer.keys, layer.values = keys, values  # adopt, no copy (update() would concatenate)
            cache.layers.append(layer)
        return cache
