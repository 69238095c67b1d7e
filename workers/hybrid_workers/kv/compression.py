"""Wire encodings of one cache tensor: raw bytes (`none`), float8 e4m3 or int8 with per-head scales."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hybrid_workers.enums import WireEncoding

FP8_MAX = 448.0  # largest finite torch.float8_e4m3fn
INT8_MAX = 127.0  # symmetric: -127..127
_WIRE_DTYPES = {WireEncoding.FP8: torch.float8_e4m3fn, WireEncoding.INT8: torch.int8}


@dataclass(frozen=True)
class EncodedTensor:
    """A tensor ready to be chunked: `data` is a flat uint8 view (no copy for `none`), `scales` float32 LE."""

    data: np.ndarray  # [nbytes] uint8
    scales: bytes  # [kv_heads] float32 little-endian; b"" for `none`


def wire_nbytes(shape: tuple[int, ...], dtype: torch.dtype, encoding: WireEncoding) -> int:
    """Bytes a tensor of `shape` takes on the wire."""
    numel = int(np.prod(shape)) if shape else 0
    element = dtype.itemsize if encoding is WireEncoding.NONE else 1
    return numel * element


def encode(tensor: torch.Tensor, encoding: WireEncoding) -> EncodedTensor:
    """Encode a [batch, kv_heads, seq, head_dim] cache tensor for the wire (moved to CPU if needed)."""
    tensor = tensor.detach().to("cpu").contiguous()
    if encoding is WireEncoding.NONE:
        return EncodedTensor(data=tensor.reshape(-1).view(torch.uint8).numpy(), scales=b"")
    values = tensor.float()  # [batch, kv_heads, seq, head_dim]
    amax = values.abs().amax(dim=(0, 2, 3))  # [kv_heads]
    limit = FP8_MAX if encoding is WireEncoding.FP8 else INT8_MAX
    scales = torch.where(amax > 0, amax / limit, torch.ones_like(amax))  # [kv_heads]
    scaled = values / scales.view(1, -1, 1, 1)
    if encoding is WireEncoding.INT8:
        scaled = scaled.round_().clamp_(-INT8_MAX, INT8_MAX)
    quantized = scaled.to(_WIRE_DTYPES[encoding])
    return EncodedTensor(
        data=quantized.reshape(-1).view(torch.uint8).numpy(),
        scales=scales.numpy().astype("<f4").tobytes(),
    )


def decode(
    data: np.ndarray,
    scales: np.ndarray | None,
    shape: tuple[int, ...],
    dtype: torch.dtype,
    encoding: WireEncoding,
) -> torch.Tensor:
    """The cache tensor (`shape`, `dtype`, CPU) from wire bytes; `none` reuses `data`'s memory.

    `data` is the flat uint8 buffer the receiver filled; `scales` is [kv_heads] float32 (None for `none`).
    """
    raw = torch.from_numpy(data)  # [nbytes] uint8
    if encoding is WireEncoding.NONE:
        return raw.view(dtype).reshape(shape)
    if scales is None:
        raise ValueError(f"{encoding.value} tensor without scales")
    quantized = raw.view(_WIRE_DTYPES[encoding]).reshape(shape)
    factors = torch.tensor(scales, dtype=torch.float32).view(1, -1, 1, 1)  # [1, kv_heads, 1, 1]
    return (quantized.float() * factors).to(dtype)
