"""GrowingLayer / reserve(): appends in place, equal to torch.cat's result, never touching adopted tensors."""

from __future__ import annotations

import torch
from hybrid_workers.engine.growing_cache import GrowingLayer, reserve
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


def _kv(seq: int, seed: int) -> torch.Tensor:
    return torch.randn(1, 2, seq, 8, generator=torch.Generator().manual_seed(seed))  # [1, kv, seq, d]


def test_appends_equal_a_dynamic_layers_concatenation_across_growth():
    growing, plain = GrowingLayer(capacity=8), DynamicLayer()
    for step, size in enumerate([5, 1, 1, 1, 1, 300, 1]):  # crosses the reservation twice
        keys, values = _kv(size, step), _kv(size, 100 + step)
        got = growing.update(keys, values)
        want = plain.update(keys, values)
        assert torch.equal(got[0], want[0])
        assert torch.equal(got[1], want[1])
    assert growing.get_seq_length() == 310
    assert growing.capacity >= 310


def test_one_token_appends_within_the_reservation_do_not_reallocate():
    layer = GrowingLayer(capacity=64)
    layer.update(_kv(10, 0), _kv(10, 1))
    storage = layer.keys.untyped_storage().data_ptr()
    for step in range(20):
        layer.update(_kv(1, step), _kv(1, step))
    assert layer.keys.untyped_storage().data_ptr() == storage
    assert layer.get_seq_length() == 30


def test_reserve_converts_layers_and_leaves_the_original_tensors_untouched():
    keys, values = _kv(6, 0), _kv(6, 1)
    before = keys.clone()
    cache = DynamicCache()
    cache.update(keys, values, 0)
    original = cache.layers[0].keys
    reserve(cache, capacity=16)
    assert isinstance(cache.layers[0], GrowingLayer)
    assert torch.equal(cache.layers[0].keys, original)
    cache.update(_kv(1, 5), _kv(1, 6), 0)
    assert cache.get_seq_length() == 7
    assert torch.equal(original, before)  # the prefill's tensor (maybe still being sent) is unchanged
    assert original.shape[-2] == 6
