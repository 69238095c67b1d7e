"""Wire encodings: `none` is bit-exact in every dtype; fp8/int8 shrink the bytes within a bounded error."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hybrid_workers.enums import WireEncoding
from hybrid_workers.kv.compression import decode, encode, wire_nbytes

SHAPE = (1, 4, 33, 16)  # [batch, kv_heads, seq, head_dim]


def round_trip(tensor: torch.Tensor, encoding: WireEncoding) -> torch.Tensor:
    encoded = encode(tensor, encoding)
    scales = np.frombuffer(encoded.scales, "<f4") if encoded.scales else None
    assert encoded.data.nbytes == wire_nbytes(tuple(tensor.shape), tensor.dtype, encoding)
    return decode(encoded.data.copy(), scales, tuple(tensor.shape), tensor.dtype, encoding)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_none_is_bit_exact(dtype: torch.dtype) -> None:
    tensor = torch.randn(SHAPE).to(dtype)
    assert torch.equal(round_trip(tensor, WireEncoding.NONE), tensor)


def test_none_accepts_a_non_contiguous_tensor() -> None:
    tensor = torch.randn(1, 33, 4, 16).transpose(1, 2)  # as v_proj(...).view(...).transpose(1, 2)
    assert torch.equal(round_trip(tensor, WireEncoding.NONE), tensor)


@pytest.mark.parametrize(
    ("encoding", "relative_error"), [(WireEncoding.FP8, 0.07), (WireEncoding.INT8, 0.005)]
)
def test_quantized_error_is_bounded_per_head(encoding: WireEncoding, relative_error: float) -> None:
    # heads with very different ranges: a per-head scale keeps the small head precise
    tensor = torch.randn(SHAPE) * torch.tensor([0.01, 1.0, 10.0, 100.0]).view(1, 4, 1, 1)
    restored = round_trip(tensor, encoding)
    for head in range(4):
        error = (restored[:, head] - tensor[:, head]).abs().max()
        assert error <= relative_error * tensor[:, head].abs().max()


@pytest.mark.parametrize("encoding", [WireEncoding.FP8, WireEncoding.INT8])
def test_quantized_bytes_are_one_per_element(encoding: WireEncoding) -> None:
    tensor = torch.randn(SHAPE)
    encoded = encode(tensor, encoding)
    assert encoded.data.nbytes * 4 == tensor.numel() * tensor.element_size()
    assert len(encoded.scales) == 4 * SHAPE[1]


def test_all_zero_head_survives_quantization() -> None:
    tensor = torch.zeros(SHAPE)
    assert torch.equal(round_trip(tensor, WireEncoding.INT8), tensor)
