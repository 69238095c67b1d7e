"""MlxKVSlot: received layers land through layer_target/commit_layer or write_layer, exactly, in any order."""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import numpy as np
import pytest
import torch
from hybrid_workers.mlx_engine.arrays import to_torch_float32
from hybrid_workers.mlx_engine.engine import MlxDecodeEngine
from hybrid_workers.mlx_engine.kv_slot import MlxKVSlot


def layer(mm: Any, prompt_len: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    shape = (1, mm.num_kv_heads, prompt_len, mm.head_dim)  # [batch, kv_heads, seq, head_dim]
    return torch.randn(shape, generator=generator).to(dtype)


def stored(slot: MlxKVSlot, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The prompt part of layer `index` as float32 torch tensors."""
    cache = slot.engine_caches()[index]
    keys, values = cache.keys[:, :, : slot.prompt_len], cache.values[:, :, : slot.prompt_len]
    return to_torch_float32(keys), to_torch_float32(values)


def test_receiver_bytes_land_exactly_in_any_layer_order(tiny_mlx: Any) -> None:
    slot = MlxDecodeEngine(tiny_mlx).new_slot(5, 3)
    layers = {
        i: (layer(tiny_mlx, 5, 2 * i), layer(tiny_mlx, 5, 2 * i + 1)) for i in range(tiny_mlx.num_layers)
    }
    for index in (2, 0, 3, 1):
        assert not slot.complete
        target = slot.layer_target(index)
        assert target.shape == (tiny_mlx.num_kv_heads, 5, tiny_mlx.head_dim) and target.dtype == "float32"
        keys, values = layers[index]
        target.keys[:] = np.frombuffer(keys.numpy().tobytes(), np.uint8)  # what a receiver copies in
        target.values[:] = np.frombuffer(values.numpy().tobytes(), np.uint8)
        slot.commit_layer(index)
    assert slot.complete and slot.length == 5 and slot.capacity == 8
    for index, (keys, values) in layers.items():
        got_keys, got_values = stored(slot, index)
        assert torch.equal(got_keys, keys) and torch.equal(got_values, values)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_write_layer_keeps_every_dtype_bit_exact(tiny_model_dir: Any, dtype: torch.dtype) -> None:
    from hybrid_workers.mlx_engine.loading import load_mlx_model

    mm = load_mlx_model(str(tiny_model_dir), dtype=str(dtype).removeprefix("torch."))
    slot = MlxDecodeEngine(mm).new_slot(4, 2)
    keys, values = layer(mm, 4, 1, dtype), layer(mm, 4, 2, dtype)
    slot.write_layer(0, keys, values[0])  # with or without the leading batch of 1
    got_keys, got_values = stored(slot, 0)
    assert torch.equal(got_keys, keys.float()) and torch.equal(got_values, values.float())
    assert slot.engine_caches()[0].keys.dtype == {torch.float32: mx.float32, torch.bfloat16: mx.bfloat16}.get(
        dtype, mx.float16
    )


def test_misuse_is_refused_with_the_reason(tiny_mlx: Any) -> None:
    engine = MlxDecodeEngine(tiny_mlx)
    slot = engine.new_slot(3, 2)
    with pytest.raises(ValueError, match="out of range"):
        slot.layer_target(tiny_mlx.num_layers)
    with pytest.raises(ValueError, match="commit without layer_target"):
        slot.commit_layer(0)
    with pytest.raises(ValueError, match=r"shape \(1, 2, 4, 16\), expected \(2, 3, 16\)"):
        slot.write_layer(0, layer(tiny_mlx, 4, 0), layer(tiny_mlx, 4, 0))
    slot.write_layer(0, layer(tiny_mlx, 3, 0), layer(tiny_mlx, 3, 1))
    with pytest.raises(ValueError, match="already committed"):
        slot.write_layer(0, layer(tiny_mlx, 3, 0), layer(tiny_mlx, 3, 1))
    with pytest.raises(ValueError, match="slot not ready"):
        engine.step([(slot, 5, 3)])  # layers 1..3 missing
    with pytest.raises(ValueError, match="context"):
        engine.new_slot(tiny_mlx.max_context, 1)
    slot.release()
    slot.release()  # idempotent
    with pytest.raises(ValueError, match="released"):
        slot.layer_target(1)


def test_nbytes_counts_the_whole_reservation(tiny_mlx: Any) -> None:
    engine = MlxDecodeEngine(tiny_mlx)
    slot = engine.new_slot(10, 6)
    assert slot.nbytes == engine.kv_bytes_per_token * 16 == 2 * 4 * 2 * 16 * 16 * 4
