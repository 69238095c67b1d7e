"""Loopback KV goodput of the data connection against plain and TLS sockets (used by kv_bench.py).

Each baseline moves the same tensor sizes between two threads pinned to the same CPUs as the KV
path's sender and receiver: the sender `sendall`s each tensor from its memory, the receiver
`recv_into`s a preallocated buffer; goodput = bytes ÷ (sender start → last byte received). The KV
path runs real bulk transfers through a prefill worker (compute pinned to CPU 0) and a PrefillClient
on the data connection; its goodput is reported two ways, and the ratios use the lower one:
bytes ÷ first→last byte on the decode clock (`stream`), and `TransferTimings.goodput_bytes_per_s`
(bytes ÷ time on the wire, the metric the decode worker exports).
"""

from __future__ import annotations

import os
import socket
import ssl
import statistics
import threading
import time
from pathlib import Path

import numpy as np


def _pin(cpus: set[int] | None) -> None:
    if cpus:
        os.sched_setaffinity(0, cpus)


def socket_goodput(sizes: list[int], cpus: set[int] | None = None, tls_dir: Path | None = None) -> float:
    """Bytes/s of one TCP (or TLS, certificates in `tls_dir`) connection on loopback moving `sizes`."""
    payload = [np.random.default_rng(i).integers(0, 255, n, dtype=np.uint8) for i, n in enumerate(sizes)]
    total = sum(sizes)
    server_ctx = client_ctx = None
    if tls_dir is not None:
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(tls_dir / "tls.crt", tls_dir / "tls.key")
        client_ctx = ssl.create_default_context(cafile=tls_dir / "ca.crt")
    buffer = bytearray(total)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        accepted: list[socket.socket] = []
        ready = threading.Event()

        def receive() -> None:
            _pin(cpus)
            conn, _ = listener.accept()
            conn = server_ctx.wrap_socket(conn, server_side=True) if server_ctx else conn
            accepted.append(conn)
            ready.set()
            view, got = memoryview(buffer), 0
            while got < total:
                got += conn.recv_into(view[got:])

        receiver = threading.Thread(target=receive)
        receiver.start()
        result: list[float] = []

        def send() -> None:
            _pin(cpus)
            sock = socket.create_connection(listener.getsockname())
            sock = client_ctx.wrap_socket(sock, server_hostname="127.0.0.1") if client_ctx else sock
            ready.wait()
            start = time.perf_counter()
            for piece in payload:
                sock.sendall(piece.data)
            receiver.join()
            result.append(total / (time.perf_counter() - start))
            sock.close()

        sender = threading.Thread(target=send)
        sender.start()
        sender.join()
        for conn in accepted:
            conn.close()
    return result[0]


def kv_goodput(target: str, lm, prompt: list[int], repeats: int, tls=None, checksum: str = "auto") -> dict:
    """Medians of bulk transfers on the data connection: stream and wire goodput, bytes, transport."""
    from hybrid_workers.decode.prefill_client import PrefillClient
    from hybrid_workers.engine import SamplingParams

    greedy = SamplingParams(max_tokens=1, temperature=0)
    stream, wire, transports = [], [], set()
    with PrefillClient(target, lm, mode="bulk", timeout_s=300, tls=tls, data_checksum=checksum) as client:
        client.prefill(prompt, greedy)  # warm-up
        for _ in range(repeats):
            timings = client.prefill(prompt, greedy).timings
            stream.append(timings.bytes / timings.transfer_s)
            wire.append(timings.goodput_bytes_per_s)
            transports.add(timings.transport)
    return {
        "stream_bytes_per_s": statistics.median(stream),
        "stream_spread": [min(stream), max(stream)],
        "wire_bytes_per_s": statistics.median(wire),
        "wire_spread": [min(wire), max(wire)],
        "bytes": timings.bytes,
        "transport": sorted(transports),
    }


def loopback_transport(lm, prompt: list[int], repeats: int, tls_dir: Path) -> dict:
    """Data connection vs plain socket (crc32 on, the plaintext default, and off), and over TLS (no crc32:
    the TLS record MAC authenticates) vs a TLS socket; compute on CPU 0, sender and receiver on CPU 1."""
    from hybrid_workers.kv.tls import TLSConfig
    from hybrid_workers.prefill.config import PrefillServerConfig
    from hybrid_workers.prefill.server import start_server

    results: dict[str, dict] = {}
    for name, tls, checksum in (
        ("plain", None, "on"),
        ("plain_no_checksum", None, "off"),
        ("tls", TLSConfig(tls_dir / "tls.crt", tls_dir / "tls.key"), "auto"),
    ):
        config = PrefillServerConfig(host="127.0.0.1", port=0, tls=tls, compute_cpus=(0,))
        allowed = os.sched_getaffinity(0)
        running = start_server(lm, config)  # this thread (and the client) now on the other CPUs
        try:
            client_tls = TLSConfig(ca=tls_dir / "ca.crt") if tls else None
            target = f"localhost:{running.port}"
            results[name] = kv_goodput(target, lm, prompt, repeats, client_tls, checksum)
        finally:
            running.stop(grace_s=0)
            os.sched_setaffinity(0, allowed)
        tensor = results[name]["bytes"] // (2 * lm.num_layers)
        sizes = [tensor] * (2 * lm.num_layers)
        baseline = [socket_goodput(sizes, {1}, tls_dir if tls else None) for _ in range(repeats)]
        kv = min(results[name]["stream_bytes_per_s"], results[name]["wire_bytes_per_s"])
        results[name] |= {
            "socket_bytes_per_s": statistics.median(baseline),
            "socket_spread": [min(baseline), max(baseline)],
            "kv_over_socket": kv / statistics.median(baseline),
        }
    return results
