"""The torch dtype of each concrete `enums.DType` and back: the one map between the two vocabularies."""

from __future__ import annotations

import torch

from hybrid_workers.enums import CONCRETE_DTYPES, DType

TORCH_DTYPES: dict[DType, torch.dtype] = {
    DType.FLOAT32: torch.float32,
    DType.BFLOAT16: torch.bfloat16,
    DType.FLOAT16: torch.float16,
}
assert tuple(TORCH_DTYPES) == CONCRETE_DTYPES  # one list of dtypes, in one order


def dtype_name(dtype: torch.dtype) -> str:
    """`torch.bfloat16` -> `bfloat16`, the name flags, profiles and the KV wire's Header carry."""
    return str(dtype).removeprefix("torch.")
