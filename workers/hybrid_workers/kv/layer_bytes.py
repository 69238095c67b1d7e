"""The two forms of a layer's receive buffer (decode/engine_api.LayerTarget): flat, or one row per KV head.

A KV slot's storage holds `capacity` positions per head, so one layer's prompt region is a row of
contiguous bytes per head with gaps between the rows; staging memory is one flat run. Receivers
write through these helpers and never care which form they got.
"""

from __future__ import annotations

import numpy as np


def byte_parts(array: np.ndarray) -> list[memoryview]:
    """The contiguous byte pieces of a layer buffer, in order: itself when flat, else its rows."""
    if array.ndim == 1:
        return [array.data]
    return [row.data for row in array]


def write_at(array: np.ndarray, offset: int, data: bytes | bytearray | memoryview) -> None:
    """Copy `data` into a layer buffer at byte `offset` of its row-major bytes (split across rows)."""
    source = np.frombuffer(data, np.uint8)
    if array.ndim == 1:
        array[offset : offset + source.size] = source
        return
    row_bytes, done = array.shape[1], 0
    while done < source.size:
        row, start = divmod(offset + done, row_bytes)
        count = min(row_bytes - start, source.size - done)
        array[row, start : start + count] = source[done : done + count]
        done += count
