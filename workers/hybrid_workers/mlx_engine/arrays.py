"""torch tensors <-> MLX arrays on the host, in float32, bfloat16 or float16 (numpy has no bfloat16)."""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import numpy as np
import torch

MX_DTYPES: dict[torch.dtype, Any] = {
    torch.float32: mx.float32,
    torch.bfloat16: mx.bfloat16,
    torch.float16: mx.float16,
}


def mx_dtype(dtype: torch.dtype) -> Any:
    """The MLX dtype for a torch dtype; ValueError for one the engine does not run in."""
    if dtype not in MX_DTYPES:
        raise ValueError(f"dtype {dtype}: the MLX engine runs in float32, bfloat16 or float16")
    return MX_DTYPES[dtype]


def to_mx(tensor: torch.Tensor) -> mx.array:
    """A CPU copy of `tensor` as an MLX array of the same shape and dtype (bfloat16 travels as raw bits)."""
    host = tensor.detach().to("cpu").contiguous()
    if host.dtype == torch.bfloat16:
        return mx.array(host.view(torch.int16).numpy()).view(mx.bfloat16)
    mx_dtype(host.dtype)
    return mx.array(host.numpy())


def to_torch_float32(array: mx.array) -> torch.Tensor:
    """`array` as a float32 CPU torch tensor (forces MLX's lazy computation)."""
    return torch.from_numpy(np.array(array.astype(mx.float32), copy=True))
