"""Loopback probe behind the KV data connection's design: does a fresh connection per transfer, or a
32-byte frame header + one MSG_WAITALL scatter receive per layer, cost goodput against a reused
connection read with a plain recv_into loop?

Usage: python bench/kv_socket_probe.py [ROUNDS] [SENDER_CPU]  (default 25 rounds, the first of each case
left out; the sender on CPU 1). By default both ends are on CPU 1, as bench/kv_transport.py places the
decode side and the prefill worker's sender; SENDER_CPU 0 puts the sender on its own core.
The payload is the bench model's 512-token KV (12 layers x keys and values of 512 KiB). Prints, per
case, the median goodput (GB/s) with its range and the slowest layer of each round (framed cases).
Numbers: docs/benchmarks.md ("KV transfer").
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

LAYERS, TENSOR, HEADER = 12, 512 * 1024, 32
CPU = 1  # the receiver's (and by default the sender's) core


def _send_gather(sock: socket.socket, parts: list[bytes]) -> None:
    views = [memoryview(part) for part in parts]
    while views:
        sent = sock.sendmsg(views)
        while views and sent >= views[0].nbytes:
            sent -= views[0].nbytes
            views.pop(0)
        if views and sent:
            views[0] = views[0][sent:]


def _sender(port: int, rounds: int, fresh: bool, framed: bool, cpu: int) -> None:
    os.sched_setaffinity(0, {cpu})
    payload = [os.urandom(TENSOR) for _ in range(2 * LAYERS)]
    sock: socket.socket | None = None
    for _ in range(rounds):
        if sock is None or fresh:
            if sock is not None:
                sock.close()
            sock = socket.create_connection(("127.0.0.1", port))
        sock.recv(1)  # go
        for layer in range(LAYERS):
            parts = [payload[2 * layer], payload[2 * layer + 1]]
            if framed:  # one gather write, as kv/data_socket.send_all: header, keys, values
                _send_gather(sock, [bytes(HEADER), *parts])
            else:
                for part in parts:
                    sock.sendall(part)
    if sock is not None:
        sock.close()


def _receive(fresh: bool, framed: bool, rounds: int, sender_cpu: int) -> tuple[list[float], list[float]]:
    """Per round: goodput (GB/s) and the slowest layer (ms; 0 when not framed)."""
    os.sched_setaffinity(0, {CPU})
    buffer, head = bytearray(2 * LAYERS * TENSOR), bytearray(HEADER)
    view = memoryview(buffer)
    listener = socket.create_server(("127.0.0.1", 0))
    argv = [sys.executable, __file__, "send", str(listener.getsockname()[1]), str(rounds)]
    sender = subprocess.Popen([*argv, str(int(fresh)), str(int(framed)), str(sender_cpu)])
    conn: socket.socket | None = None
    rates, slowest = [], []
    for _ in range(rounds):
        if conn is None or fresh:
            if conn is not None:
                conn.close()
            conn, _ = listener.accept()
        start = last = time.perf_counter()
        conn.sendall(b"g")
        gaps = [0.0]
        if framed:
            for layer in range(LAYERS):
                conn.recv_into(head, HEADER, socket.MSG_WAITALL)
                keys = view[2 * layer * TENSOR : (2 * layer + 1) * TENSOR]
                values = view[(2 * layer + 1) * TENSOR : (2 * layer + 2) * TENSOR]
                assert conn.recvmsg_into([keys, values], 0, socket.MSG_WAITALL)[0] == 2 * TENSOR
                now = time.perf_counter()
                gaps.append(now - last)
                last = now
        else:
            got = 0
            while got < len(buffer):
                got += conn.recv_into(view[got:])
        rates.append(len(buffer) / (time.perf_counter() - start) / 1e9)
        slowest.append(max(gaps) * 1e3)
    sender.wait(timeout=60)
    listener.close()
    return rates[1:], slowest[1:]


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 25
    sender_cpu = int(sys.argv[2]) if len(sys.argv) > 2 else CPU
    print(
        f"load average at the start: {Path('/proc/loadavg').read_text().strip()}; sender on CPU {sender_cpu}"
    )
    for fresh in (False, True):
        for framed in (False, True):
            rates, slowest = _receive(fresh, framed, rounds, sender_cpu)
            print(
                f"{'fresh' if fresh else 'reused'} connection, {'framed' if framed else 'recv_into loop'}: "
                f"{statistics.median(rates):.2f} GB/s ({min(rates):.2f}-{max(rates):.2f}); slowest layer "
                f"{statistics.median(slowest):.2f} ms ({min(slowest):.2f}-{max(slowest):.2f})",
                flush=True,
            )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "send":
        _sender(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1", sys.argv[5] == "1", int(sys.argv[6]))
    else:
        main()
