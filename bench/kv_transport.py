"""Loopback KV goodput of the data connection against plain and TLS sockets (used by kv_bench.py).

Placed as in a deployment: the prefill worker is its own process (`hybrid-inference prefill
--compute-cpus 0`, OMP_NUM_THREADS=1, allowed CPUs 0,1: compute on CPU 0, its gRPC and data
connection threads on CPU 1), the decode side (this process: a PrefillClient receiving into its
buffers) on CPU 1. Each baseline moves the same tensor sizes between two processes on CPU 1, the
same structure: a sender process `sendall`s each tensor from its memory, this process `recv_into`s a
preallocated buffer; goodput = bytes ÷ (go signal sent → last byte received). The KV path runs real
bulk transfers; its goodput is reported two ways, and the ratios use the lower one: bytes ÷ first→last
byte on the decode clock (`stream`), and `TransferTimings.goodput_bytes_per_s` (bytes ÷ time on the
wire, the metric the decode worker exports). Rows: plaintext with the checksum (the default), the
same into a new TorchKVSlot per transfer (the decode worker's destination), checksum off, and TLS;
each also reports `connect_s`, what opening one data connection costs (what a pool would save).
Each baseline runs twice: with the same cache-hot buffers every round, and `cold` (both ends' memory
evicted before each round, a fresh destination each round), the state a real transfer's bytes are in.

`sender_cpu=0` (kv_bench.py --sender-cpu 0) gives the sending side its own core instead: the whole
prefill worker process (compute, gRPC, data connection) and the baseline's sender on CPU 0, the
decode side and the baseline's receiver on CPU 1 - the bulk transfer starts after the compute, so the
sender has CPU 0 to itself, as the spare cores of a GPU node and a separate Mac give it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

IO_CPU, COMPUTE_CPU = 1, 0
EVICT_BYTES = 384 << 20  # written by each end before a cold baseline round: several times any L3 here
# name, TLS, --kv-data-checksum, into a new TorchKVSlot (the decode worker's destination) or not
ROWS = (
    ("plain", False, "on", False),
    ("plain_into_slot", False, "on", True),
    ("plain_no_checksum", False, "off", False),
    ("tls", True, "auto", False),
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _contexts(tls_dir: Path | None) -> tuple[ssl.SSLContext | None, ssl.SSLContext | None]:
    if tls_dir is None:
        return None, None
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tls_dir / "tls.crt", tls_dir / "tls.key")
    return server, ssl.create_default_context(cafile=tls_dir / "ca.crt")


def socket_goodput(
    sizes: list[int],
    repeats: int,
    tls_dir: Path | None = None,
    sender_cpu: int = IO_CPU,
    cold: bool = False,
) -> list[float]:
    """Bytes/s of `repeats` rounds of `sizes` over one TCP (or TLS) loopback connection from a sender
    process on `sender_cpu` to this process (which must already run on IO_CPU).

    `cold`: each round moves memory no cache holds, as a KV transfer does (the prefill streamed the
    model's weights through the caches after computing the early layers, and the decode side receives
    into a fresh KV slot): both ends write EVICT_BYTES of scratch before the round, and the receiver
    takes a new buffer each round, its pages touched before the eviction (the data connection
    prefaults its destination when the Header arrives). Otherwise the same buffers every round."""
    total = sum(sizes)
    server_ctx, _ = _contexts(tls_dir)
    buffer = bytearray(total)
    scratch = np.zeros(EVICT_BYTES if cold else 0, dtype=np.uint8)
    rates: list[float] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        argv = [
            "taskset",
            "-c",
            str(sender_cpu),
            sys.executable,
            __file__,
            "send",
            str(listener.getsockname()[1]),
        ]
        argv += [str(repeats), str(tls_dir or ""), "cold" if cold else "hot", *map(str, sizes)]
        sender = subprocess.Popen(argv)
        try:
            listener.settimeout(60)
            conn, _ = listener.accept()
            conn.settimeout(None)
            conn = server_ctx.wrap_socket(conn, server_side=True) if server_ctx else conn
            with conn:
                for _ in range(repeats):
                    conn.recv(1)  # the sender is ready (its scratch written, when cold)
                    if cold:
                        fresh = np.empty(total, dtype=np.uint8)
                        fresh[::4096] = 0  # prefaulted, as the data connection's destination
                        scratch += 1  # then out of every cache
                        view = memoryview(fresh).cast("B")
                    else:
                        view = memoryview(buffer)
                    got = 0
                    start = time.perf_counter()
                    conn.sendall(b"g")  # go: the sender starts now
                    while got < total:
                        got += conn.recv_into(view[got:])
                    rates.append(total / (time.perf_counter() - start))
        finally:
            sender.wait(timeout=60)
    return rates


def _send_role(port: int, repeats: int, tls_dir: str, cold: bool, sizes: list[int]) -> None:
    """The baseline's sender process: connect, then per round (evict the caches when `cold`) say ready,
    and at the go byte sendall every tensor."""
    payload = [np.random.default_rng(i).integers(0, 255, n, dtype=np.uint8) for i, n in enumerate(sizes)]
    scratch = np.zeros(EVICT_BYTES if cold else 0, dtype=np.uint8)
    _, client_ctx = _contexts(Path(tls_dir) if tls_dir else None)
    sock = socket.create_connection(("127.0.0.1", port))
    sock = client_ctx.wrap_socket(sock, server_hostname="127.0.0.1") if client_ctx else sock
    with sock:
        for _ in range(repeats):
            scratch += 1  # cold: the payload leaves the caches (a no-op when hot)
            sock.sendall(b"r")
            sock.recv(1)
            for piece in payload:
                sock.sendall(piece.data)


@contextlib.contextmanager
def prefill_process(model: str, tls_dir: Path | None, sender_cpu: int = IO_CPU) -> Iterator[str]:
    """A `hybrid-inference prefill` process on loopback, compute on COMPUTE_CPU (its other threads on
    `sender_cpu`); yields its gRPC target."""
    from hybrid_workers.decode.prefill_client import PrefillClient  # noqa: F401  (import cost paid here)

    port = _free_port()
    cpus = sorted({COMPUTE_CPU, sender_cpu})
    argv = ["taskset", "-c", ",".join(map(str, cpus)), sys.executable, "-m", "hybrid_workers", "prefill"]
    argv += ["--model", model, "--device", "cpu", "--dtype", "float32", "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--metrics-port", "0"]
    if len(cpus) > 1:  # split: compute on COMPUTE_CPU, the rest on sender_cpu
        argv += ["--compute-cpus", str(COMPUTE_CPU)]
    if tls_dir is not None:
        argv += ["--tls-cert", str(tls_dir / "tls.crt"), "--tls-key", str(tls_dir / "tls.key")]
    worker = subprocess.Popen(argv, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL)
    try:
        yield f"localhost:{port}"
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def kv_goodput(
    target: str, lm, prompt: list[int], repeats: int, tls=None, checksum: str = "auto", slot: bool = False
) -> dict:
    """Medians of bulk transfers on the data connection: stream and wire goodput, bytes, transport.
    `slot`: each transfer lands in a new TorchKVSlot (room for 32 more tokens), as in the decode
    worker, instead of the receiver's own buffers."""
    from hybrid_workers.decode.prefill_client import PrefillClient
    from hybrid_workers.engine import SamplingParams
    from hybrid_workers.engine.batched import TorchDecodeEngine
    from hybrid_workers.kv import KVProtocolError

    engine = TorchDecodeEngine(lm) if slot else None

    greedy = SamplingParams(max_tokens=1, temperature=0)
    stream, wire, transports = [], [], set()
    with PrefillClient(target, lm, mode="bulk", timeout_s=600, tls=tls, data_checksum=checksum) as client:
        deadline = time.monotonic() + 120
        while True:  # the worker process loads its model first
            try:
                client.probe()
                break
            except KVProtocolError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        client.prefill(prompt, greedy)  # warm-up
        connect = connect_seconds(client, repeats)
        for _ in range(repeats):
            room = min(32, lm.max_context - len(prompt))  # a prompt at the context: no room to decode
            destination = engine.new_slot(len(prompt), room) if engine is not None else None
            timings = client.prefill(prompt, greedy, slot=destination).timings
            if destination is not None:
                destination.release()
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
        "connect_s": statistics.median(connect),
        "connect_spread_s": [min(connect), max(connect)],
    }


def connect_seconds(client, repeats: int) -> list[float]:
    """What opening one data connection costs (TCP connect, TLS handshake, hello; the prefill worker
    drops these unclaimed ones): the per-transfer price a connection pool would save."""
    from hybrid_workers.decode.data_link import DataAddress, open_data, target_host
    from hybrid_workers.kv import handshake
    from hybrid_workers.kv.proto import kv_pb2_grpc

    reply = kv_pb2_grpc.PrefillWorkerStub(client._channel).Handshake(handshake.request_pb(client.side))
    address = DataAddress(target_host(client.target), reply.data_port)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        sock = open_data(address, os.urandom(16), client.tls, 10.0, target_host(client.target))
        seconds.append(time.perf_counter() - start)
        sock.close()
    return seconds


def loopback_transport(
    lm, model: str, prompt: list[int], repeats: int, tls_dir: Path, sender_cpu: int = IO_CPU
) -> dict:
    """Data connection vs plain socket (checksum on, the plaintext default, and off), and over TLS (no
    checksum: the TLS record MAC authenticates) vs a TLS socket; compute on CPU 0, the receiving side
    on CPU 1, the sending side on `sender_cpu`."""
    from hybrid_workers.kv.tls import TLSConfig

    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {IO_CPU})  # the decode side: receiver and client
    placement = {"compute": COMPUTE_CPU, "sender": sender_cpu, "receiver": IO_CPU}
    results: dict[str, dict] = {"placement": placement}
    try:
        for name, tls, checksum, slot in ROWS:
            with prefill_process(model, tls_dir if tls else None, sender_cpu) as target:
                client_tls = TLSConfig(ca=tls_dir / "ca.crt") if tls else None
                results[name] = kv_goodput(target, lm, prompt, repeats, client_tls, checksum, slot)
            tensor = results[name]["bytes"] // (2 * lm.num_layers)
            sizes = [tensor] * (2 * lm.num_layers)
            baseline = socket_goodput(sizes, repeats, tls_dir if tls else None, sender_cpu)
            cold = socket_goodput(sizes, repeats, tls_dir if tls else None, sender_cpu, cold=True)
            kv = min(results[name]["stream_bytes_per_s"], results[name]["wire_bytes_per_s"])
            results[name] |= {
                "socket_bytes_per_s": statistics.median(baseline),
                "socket_spread": [min(baseline), max(baseline)],
                "kv_over_socket": kv / statistics.median(baseline),
                "cold_socket_bytes_per_s": statistics.median(cold),
                "cold_socket_spread": [min(cold), max(cold)],
                "kv_over_cold_socket": kv / statistics.median(cold),
            }
    finally:
        os.sched_setaffinity(0, allowed)
    return results


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "send":
    _send_role(
        int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5] == "cold", [int(n) for n in sys.argv[6:]]
    )
