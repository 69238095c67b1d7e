"""kv/layer_bytes: flat and row-strided layer buffers take the same bytes at the same offsets."""

from __future__ import annotations

import numpy as np
from hybrid_workers.kv.layer_bytes import byte_parts, write_at


def test_writes_at_any_offset_split_across_rows_as_into_a_flat_buffer() -> None:
    data = np.arange(60, dtype=np.uint8).tobytes()
    flat = np.zeros(60, np.uint8)
    storage = np.zeros((4, 25), np.uint8)
    rows = storage[:, :15]  # 4 rows of 15 bytes, 25 apart
    for offset in range(0, 60, 7):  # chunks that straddle row ends
        write_at(flat, offset, data[offset : offset + 7])
        write_at(rows, offset, data[offset : offset + 7])
    assert flat.tobytes() == rows.tobytes() == data
    assert not storage[:, 15:].any()
    assert [len(part) for part in byte_parts(rows)] == [15] * 4
    assert b"".join(bytes(part) for part in byte_parts(rows)) == data
    assert len(byte_parts(flat)) == 1
