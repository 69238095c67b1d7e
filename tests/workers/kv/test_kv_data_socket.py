"""kv/data_socket: a blocking receive with a kernel timeout fills several buffers in order from bytes
that trickle in (partial returns count as progress, timeouts poll), and refuses a short stream."""

from __future__ import annotations

import socket
import threading

import numpy as np
import pytest
from hybrid_workers.kv.data_socket import receive_blocking, recv_exact
from hybrid_workers.kv.errors import KVProtocolError, Reason
from hybrid_workers.kv.layer_bytes import byte_parts


def _trickle(sock: socket.socket, data: bytes, pieces: int, idle: threading.Event | None) -> threading.Thread:
    """Send `data` in `pieces`, each after the receiver timed out with nothing new (`idle` set)."""

    def run() -> None:
        step = -(-len(data) // pieces)
        for start in range(0, len(data), step):
            sock.sendall(data[start : start + step])
            if idle is not None and start + step < len(data):  # (after the last piece it is done)
                assert idle.wait(timeout=30), "the receiver never timed out"  # hang guard
                idle.clear()
        sock.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_rows_fill_in_order_across_partial_receives_and_timeouts() -> None:
    storage = np.zeros((3, 40), np.uint8)  # a slot's layer: 3 rows of 24 bytes, rows 40 bytes apart
    rows = storage[:, :24]
    data = bytes(range(72))
    near, far = socket.socketpair()
    receive_blocking(near, 0.02)
    polls: list[int] = []
    idle = threading.Event()

    def poll(count: int) -> None:
        polls.append(count)
        if count == 0:
            idle.set()

    writer = _trickle(far, data, pieces=5, idle=idle)
    with near:
        recv_exact(near, byte_parts(rows), poll, "a test tensor")
    writer.join()
    assert rows.tobytes() == data and not storage[:, 24:].any()  # the gaps between rows untouched
    assert sum(polls) == 72 and polls.count(0) >= 4  # progress per partial receive, polls on timeouts


def test_a_stream_that_ends_early_is_a_truncated_chunk() -> None:
    near, far = socket.socketpair()
    receive_blocking(near, 0.02)
    writer = _trickle(far, b"x" * 10, pieces=1, idle=None)
    buffers = [memoryview(bytearray(8)), memoryview(bytearray(8))]
    with near, pytest.raises(KVProtocolError, match="after 10 of 16 bytes of a test tensor") as raised:
        recv_exact(near, buffers, lambda _count: None, "a test tensor")
    writer.join()
    assert raised.value.reason is Reason.TRUNCATED_CHUNK


def test_more_buffers_than_one_scatter_receive_takes_are_filled_in_turns() -> None:
    near, far = socket.socketpair()
    receive_blocking(near, 0.02)
    data = bytes(i % 251 for i in range(1300))
    writer = _trickle(far, data, pieces=1, idle=None)
    buffers = [memoryview(bytearray(1)) for _ in range(1300)]  # more than IOV_MAX (1024 on Linux)
    with near:
        recv_exact(near, buffers, lambda _count: None, "many rows")
    writer.join()
    assert b"".join(bytes(b) for b in buffers) == data
