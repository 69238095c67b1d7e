"""TorchKVSlot keeps the KVSlot contract: bytes written into a layer target become that layer's K/V."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hybrid_workers.decode.engine_api import slot_sink
from hybrid_workers.engine.kv_slot import TorchKVSlot
from hybrid_workers.kv.layer_bytes import byte_parts, write_at

LAYERS, HEADS, PROMPT, DIM = 3, 2, 5, 4


def _slot(dtype: torch.dtype = torch.float32) -> TorchKVSlot:
    return TorchKVSlot(LAYERS, HEADS, DIM, PROMPT, PROMPT + 7, dtype, torch.device("cpu"))


def _layer(seed: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.randn((HEADS, PROMPT, DIM), generator=torch.Generator().manual_seed(seed)).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_bytes_written_in_chunks_into_targets_become_the_layers(dtype):
    slot = _slot(dtype)
    expected = {}
    for layer in reversed(range(LAYERS)):  # any order
        keys, values = _layer(2 * layer, dtype), _layer(2 * layer + 1, dtype)
        target = slot.layer_target(layer)
        assert target.shape == (HEADS, PROMPT, DIM) and target.dtype == str(dtype).removeprefix("torch.")
        for buffer, tensor in ((target.keys, keys), (target.values, values)):
            raw = tensor.contiguous().view(torch.uint8).reshape(-1).numpy()
            for offset in range(0, target.nbytes, 7):  # like wire chunks, copied in at their offsets
                write_at(buffer, offset, raw[offset : offset + 7].tobytes())
        assert not slot.complete
        slot.commit_layer(layer)
        expected[layer] = (keys, values)
    assert slot.complete
    for layer, (keys, values) in expected.items():
        got_keys, got_values = slot.layer_kv(layer, PROMPT)
        assert torch.equal(got_keys[0], keys) and torch.equal(got_values[0], values)


def test_on_the_cpu_the_target_is_the_storage_itself_one_row_per_head():
    slot = _slot()
    target = slot.layer_target(1)
    assert slot.keys is not None and slot.values is not None
    assert target.keys.shape == (HEADS, PROMPT * DIM * 4)  # [kv_heads, prompt bytes], rows strided
    for head, part in enumerate(byte_parts(target.keys)):  # each row is that head's prompt region
        assert np.frombuffer(part, np.uint8).ctypes.data == slot.keys[1, head].data_ptr()
    keys, values = _layer(3, torch.float32), _layer(4, torch.float32)
    for buffer, tensor in ((target.keys, keys), (target.values, values)):
        for part, row in zip(byte_parts(buffer), tensor.view(torch.uint8).reshape(HEADS, -1), strict=True):
            part[:] = row.numpy().tobytes()  # what recvmsg_into does: no staging, no copy at the commit
    slot.commit_layer(1)
    got_keys, got_values = slot.layer_kv(1, PROMPT)
    assert torch.equal(got_keys[0], keys) and torch.equal(got_values[0], values)


def test_a_layer_written_in_place_but_never_committed_leaves_the_slot_incomplete_and_releasable():
    slot = _slot()
    for layer in range(LAYERS - 1):
        slot.write_layer(layer, _layer(layer, torch.float32), _layer(layer, torch.float32))
    target = slot.layer_target(LAYERS - 1)  # a transfer cut in the middle of the last layer
    write_at(target.keys, 0, b"\xff" * 10)
    assert not slot.complete  # never part of a batch: decode reads only complete slots
    assert slot.layer_target(LAYERS - 1).keys.ctypes.data == target.keys.ctypes.data  # same buffers
    slot.release()
    assert slot.released and slot.nbytes == 0
    with pytest.raises(ValueError, match="released"):
        slot.commit_layer(LAYERS - 1)


def test_write_layer_accepts_batched_tensors_and_numpy_through_the_receiver_sink():
    slot = _slot()
    sink = slot_sink(slot)
    for layer in range(LAYERS):
        keys = _layer(layer, torch.float32)
        sink(layer, keys.unsqueeze(0), keys.numpy() * 2)
    keys, values = slot.layer_kv(1, PROMPT)
    assert torch.equal(values, keys * 2) and slot.complete


def test_misuse_is_refused_with_the_layer_named():
    slot = _slot()
    with pytest.raises(ValueError, match="out of range"):
        slot.layer_target(LAYERS)
    with pytest.raises(ValueError, match="commit without layer_target"):
        slot.commit_layer(0)
    with pytest.raises(ValueError, match="expected"):
        slot.write_layer(0, np.zeros((HEADS, PROMPT + 1, DIM), np.float32), np.zeros(1, np.float32))
    slot.write_layer(0, _layer(0, torch.float32), _layer(1, torch.float32))
    with pytest.raises(ValueError, match="already committed"):
        slot.layer_target(0)
    slot.release()
    slot.release()  # idempotent
    assert slot.nbytes == 0
    with pytest.raises(ValueError, match="released"):
        slot.layer_target(1)
