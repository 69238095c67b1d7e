"""CacheBuilder: any arrival order, refuses bad layers, adopts tensors without copying."""

from __future__ import annotations

import pytest
import torch
from hybrid_workers.engine import CacheBuilder


def _layer(seq: int = 6, fill: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    keys = torch.full((1, 2, seq, 16), fill)  # [1, kv_heads, seq, head_dim]
    return keys, keys + 0.5


def test_layers_in_any_order_build_a_cache_holding_the_same_tensors():
    builder = CacheBuilder(3)
    tensors = {index: _layer(fill=index) for index in (2, 0, 1)}
    for index, (keys, values) in tensors.items():
        builder.add_layer(index, keys, values)
    cache = builder.build()
    assert cache.get_seq_length() == 6
    for index, (keys, values) in tensors.items():
        # Same storage: the builder adopted the tensors instead of copying them.
        assert cache.layers[index].keys.data_ptr() == keys.data_ptr()
        assert cache.layers[index].values.data_ptr() == values.data_ptr()


def test_missing_layers_are_listed_and_block_build():
    builder = CacheBuilder(4)
    builder.add_layer(2, *_layer())
    assert builder.missing_layers() == [0, 1, 3]
    with pytest.raises(ValueError, match=r"layers \[0, 1, 3\] missing"):
        builder.build()


@pytest.mark.parametrize("index", [-1, 4, True])
def test_out_of_range_index_is_refused(index):
    with pytest.raises(ValueError, match="out of range"):
        CacheBuilder(4).add_layer(index, *_layer())


def test_a_layer_given_twice_is_refused():
    builder = CacheBuilder(2)
    builder.add_layer(1, *_layer())
    with pytest.raises(ValueError, match="layer 1: already added"):
        builder.add_layer(1, *_layer())


def test_layers_that_disagree_on_shape_are_refused():
    builder = CacheBuilder(2)
    builder.add_layer(0, *_layer(seq=6))
    with pytest.raises(ValueError, match="differ"):
        builder.add_layer(1, *_layer(seq=7))
    keys, _ = _layer()
    with pytest.raises(ValueError, match="must be"):
        builder.add_layer(1, keys, torch.zeros(1, 2, 5, 16))


def test_the_layer_count_comes_from_a_loaded_model(tiny_lm):
    assert CacheBuilder(tiny_lm).missing_layers() == list(range(tiny_lm.num_layers))
    with pytest.raises(ValueError, match="positive"):
        CacheBuilder(0)
