"""Forward hooks on every decoder layer, installed once per model, that serve any number of prefills.

Each prefill registers a LayerWatch for its own cache object; the hooks look the watch up by the
`cache` argument each decoder layer receives, so concurrent forwards (other prefills, decode steps)
pass through untouched. Installing the hooks once, at load time, matters: torch registers a kwargs
hook in two steps, and a forward running in another thread between them would call it wrongly.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

# on_layer(layer_index, keys, values); keys/values: [1, kv_heads, seq, head_dim], post-RoPE, as cached.
OnLayer = Callable[[int, torch.Tensor, torch.Tensor], None]


def _synchronize(device: torch.device) -> None:
    """Wait for queued kernels on `device` (CPU work is already done when the hook runs)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


class LayerWatch:
    """What one prefill wants from the hooks: per-layer times, and its K/V handed to on_layer."""

    def __init__(self, cache: Any, num_layers: int, device: torch.device, on_layer: OnLayer | None) -> None:
        self.cache, self.on_layer, self.device = cache, on_layer, device
        self.started = [0.0] * num_layers
        self.seconds = [0.0] * num_layers

    def before(self, index: int) -> None:
        self.started[index] = time.perf_counter()

    def after(self, index: int) -> None:
        _synchronize(self.device)  # on GPUs, "final" and the layer's time need its kernels finished
        self.seconds[index] = time.perf_counter() - self.started[index]
        if self.on_layer is not None:
            layer: Any = self.cache.layers[index]  # DynamicLayer: .keys/.values [1, kv_heads, seq, head_dim]
            self.on_layer(index, layer.keys, layer.values)


class LayerHooks:
    """The hooks of one model and the watches currently active on it."""

    def __init__(self, layers: Any) -> None:
        self._watches: dict[int, LayerWatch] = {}  # id(cache) -> watch
        self._lock = threading.Lock()
        for index, layer in enumerate(layers):
            layer.register_forward_pre_hook(self._pre_hook(index), with_kwargs=True)
            layer.register_forward_hook(self._post_hook(index), with_kwargs=True)

    def _find(self, kwargs: dict[str, Any]) -> LayerWatch | None:
        cache = kwargs.get("cache")
        watch = self._watches.get(id(cache)) if cache is not None else None
        return watch if watch is not None and watch.cache is cache else None

    def _pre_hook(self, index: int) -> Callable[..., None]:
        def hook(_module: Any, _args: Any, kwargs: dict[str, Any]) -> None:
            if (watch := self._find(kwargs)) is not None:
                watch.before(index)

        return hook

    def _post_hook(self, index: int) -> Callable[..., None]:
        def hook(_module: Any, _args: Any, kwargs: dict[str, Any], _output: Any) -> None:
            if (watch := self._find(kwargs)) is not None:
                watch.after(index)

        return hook

    @contextmanager
    def watching(self, watch: LayerWatch) -> Iterator[LayerWatch]:
        """Activate `watch` for forwards that use its cache, for the duration of the block."""
        with self._lock:
            self._watches[id(watch.cache)] = watch
        try:
            yield watch
        finally:
            with self._lock:
                del self._watches[id(watch.cache)]


_INSTALLED: weakref.WeakKeyDictionary[Any, LayerHooks] = weakref.WeakKeyDictionary()
_INSTALL_LOCK = threading.Lock()


def layer_hooks(model: Any) -> LayerHooks:
    """The hooks of `model` (a causal LM with model.model.layers), installed on first call."""
    with _INSTALL_LOCK:
        hooks = _INSTALLED.get(model)
        if hooks is None:
            hooks = _INSTALLED[model] = LayerHooks(model.model.layers)
        return hooks
