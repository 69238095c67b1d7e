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
same into a new TorchKVSlot per transfer (the decode worker's destination), checksum off, TLS, and
layerwise into a slot (the deployment's default: each layer sent as it becomes final; wire goodput);
each also reports `connect_s`, what opening one data connection costs (what a pool would save).
Each baseline runs twice: with the same cache-hot buffers every round, and `cold` (both ends' memory
evicted before each round, a fresh destination each round), the state a real transfer's bytes are in.
The baselines' rounds are interleaved with the KV transfers (after each transfer, one hot round -
right after an untimed one - and one cold round), so the box's drift between minutes cancels; besides
the ratio of medians, `kv_over_*_per_round` gives each transfer ÷ the round right after it.

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
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

IO_CPU, COMPUTE_CPU = 1, 0
EVICT_BYTES = 384 << 20  # written by each end before a cold baseline round: several times any L3 here
# name, TLS, --kv-data-checksum, into a new TorchKVSlot (the decode worker's destination) or not, mode
ROWS = (
    ("plain", False, "on", False, "bulk"),
    ("plain_into_slot", False, "on", True, "bulk"),
    ("plain_no_checksum", False, "off", False, "bulk"),
    ("tls", True, "auto", False, "bulk"),
    ("plain_layerwise", False, "on", True, "layerwise"),
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


class SocketBaseline:
    """A plain (or TLS) socket baseline, one round at a time: a sender process on `sender_cpu`
    connected to this process (which must already run on IO_CPU), so its rounds can be interleaved
    with the KV transfers they are compared with (the box's speed drifts between minutes).

    `cold`: each round moves memory no cache holds, as a KV transfer does (the prefill streamed the
    model's weights through the caches after computing the early layers, and the decode side receives
    into a fresh KV slot): both ends write EVICT_BYTES of scratch before the round, and the receiver
    takes a new buffer each round, its pages touched before the eviction (the data connection
    prefaults its destination when the Header arrives). Otherwise the same buffers every round, each
    timed round right after an untimed one, so they are as cache-hot as a back-to-back loop leaves
    them."""

    def __init__(self, sizes: list[int], tls_dir: Path | None, sender_cpu: int, cold: bool) -> None:
        self.total, self.cold = sum(sizes), cold
        self._buffer = bytearray(0 if cold else self.total)
        self._scratch = np.zeros(EVICT_BYTES if cold else 0, dtype=np.uint8)
        self._stack = contextlib.ExitStack()
        server_ctx, _ = _contexts(tls_dir)
        listener = self._stack.enter_context(socket.create_server(("127.0.0.1", 0)))
        argv = ["taskset", "-c", str(sender_cpu), sys.executable, __file__, "send"]
        argv += [
            str(listener.getsockname()[1]),
            str(tls_dir or ""),
            "cold" if cold else "hot",
            *map(str, sizes),
        ]
        sender = subprocess.Popen(argv)
        self._stack.callback(sender.wait, timeout=60)  # after the connection closed: the sender's end
        listener.settimeout(60)
        conn, _ = listener.accept()
        conn.settimeout(None)
        self._conn = self._stack.enter_context(
            server_ctx.wrap_socket(conn, server_side=True) if server_ctx else conn
        )
        self._conn.recv(1)  # the sender is ready (its scratch written, when cold)

    def __enter__(self) -> SocketBaseline:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def round(self) -> float:
        """One timed round (hot: after an untimed one); bytes/s from the go byte to the last byte."""
        if not self.cold:
            self._move()
        return self._move()

    def _move(self) -> float:
        if self.cold:
            fresh = np.empty(self.total, dtype=np.uint8)
            fresh[::4096] = 0  # prefaulted, as the data connection's destination
            self._scratch += 1  # then out of every cache
            view = memoryview(fresh).cast("B")
        else:
            view = memoryview(self._buffer)
        got = 0
        start = time.perf_counter()
        self._conn.sendall(b"g")  # go: the sender starts now
        while got < self.total:
            got += self._conn.recv_into(view[got:])
        rate = self.total / (time.perf_counter() - start)
        self._conn.recv(1)  # ready again: its eviction for the next round must not overlap what runs next
        return rate


def _send_role(port: int, tls_dir: str, cold: bool, sizes: list[int]) -> None:
    """The baseline's sender process: connect, then per round (evict the caches when `cold`) say ready,
    and at the go byte sendall every tensor; done when the receiver closes the connection."""
    payload = [np.random.default_rng(i).integers(0, 255, n, dtype=np.uint8) for i, n in enumerate(sizes)]
    scratch = np.zeros(EVICT_BYTES if cold else 0, dtype=np.uint8)
    _, client_ctx = _contexts(Path(tls_dir) if tls_dir else None)
    sock = socket.create_connection(("127.0.0.1", port))
    sock = client_ctx.wrap_socket(sock, server_hostname="127.0.0.1") if client_ctx else sock
    with sock:
        while True:
            scratch += 1  # cold: the payload leaves the caches (a no-op when hot)
            try:
                sock.sendall(b"r")
                if not sock.recv(1):
                    return
            except (ConnectionError, ssl.SSLError):
                return
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
    target: str,
    lm,
    prompt: list[int],
    repeats: int,
    tls=None,
    checksum: str = "auto",
    slot: bool = False,
    between: Callable[[], None] | None = None,
    mode: str = "bulk",
) -> dict:
    """Medians of transfers on the data connection: stream and wire goodput, bytes, transport.
    `slot`: each transfer lands in a new TorchKVSlot (room for 32 more tokens), as in the decode
    worker, instead of the receiver's own buffers. `between()` runs after each timed transfer (the
    baselines' rounds, interleaved); `rounds` lists each transfer's goodput (the lower of the two).
    `mode` layerwise (a deployment's default): each layer leaves as soon as it is final, while its bytes
    are fresh in the caches, and the stream spans the compute, so only the wire goodput (bytes ÷ the
    layers' summed time on the wire) counts: `rounds` and `goodput_bytes_per_s` are that one."""
    from hybrid_workers.decode.prefill_client import PrefillClient
    from hybrid_workers.engine import SamplingParams
    from hybrid_workers.engine.batched import TorchDecodeEngine
    from hybrid_workers.kv import KVProtocolError

    engine = TorchDecodeEngine(lm) if slot else None

    greedy = SamplingParams(max_tokens=1, temperature=0)
    stream, wire, transports = [], [], set()
    with PrefillClient(target, lm, mode=mode, timeout_s=600, tls=tls, data_checksum=checksum) as client:
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
            if between is not None:
                between()
    layerwise = mode == "layerwise"  # the stream spans the compute: the wire goodput alone
    return {
        "stream_bytes_per_s": statistics.median(stream),
        "stream_spread": [min(stream), max(stream)],
        "wire_bytes_per_s": statistics.median(wire),
        "wire_spread": [min(wire), max(wire)],
        "bytes": timings.bytes,
        "transport": sorted(transports),
        "connect_s": statistics.median(connect),
        "connect_spread_s": [min(connect), max(connect)],
        "mode": mode,
        "rounds": wire if layerwise else [min(pair) for pair in zip(stream, wire, strict=True)],
        "goodput_bytes_per_s": statistics.median(wire)
        if layerwise
        else min(statistics.median(stream), statistics.median(wire)),
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
        tensor = len(prompt) * lm.num_kv_heads * lm.head_dim * lm.dtype.itemsize
        sizes = [tensor] * (2 * lm.num_layers)  # keys and values of every layer, as the KV path moves
        for name, tls, checksum, slot, mode in ROWS:
            client_tls = TLSConfig(ca=tls_dir / "ca.crt") if tls else None
            tls_here = tls_dir if tls else None
            results[name] = _row(
                model, lm, prompt, repeats, sender_cpu, sizes, tls_here, client_tls, checksum, slot, mode
            )
    finally:
        os.sched_setaffinity(0, allowed)
    return results


def _row(
    model: str,
    lm,
    prompt: list[int],
    repeats: int,
    sender_cpu: int,
    sizes: list[int],
    tls_dir: Path | None,
    client_tls,
    checksum: str,
    slot: bool,
    mode: str,
) -> dict:
    """One row: its own prefill worker, KV transfers each followed by a hot and a cold socket round."""
    hot: list[float] = []
    cold: list[float] = []
    with contextlib.ExitStack() as stack:
        target = stack.enter_context(prefill_process(model, tls_dir, sender_cpu))
        hot_socket = stack.enter_context(SocketBaseline(sizes, tls_dir, sender_cpu, cold=False))
        cold_socket = stack.enter_context(SocketBaseline(sizes, tls_dir, sender_cpu, cold=True))

        def baselines() -> None:  # one round of each right after each KV transfer
            hot.append(hot_socket.round())
            cold.append(cold_socket.round())

        row = kv_goodput(target, lm, prompt, repeats, client_tls, checksum, slot, baselines, mode)
    assert row["bytes"] == sum(sizes), (row["bytes"], sum(sizes))
    kv = row["goodput_bytes_per_s"]
    return row | {
        "socket_bytes_per_s": statistics.median(hot),
        "socket_spread": [min(hot), max(hot)],
        "kv_over_socket": kv / statistics.median(hot),
        "kv_over_socket_per_round": _round_ratios(row["rounds"], hot),
        "cold_socket_bytes_per_s": statistics.median(cold),
        "cold_socket_spread": [min(cold), max(cold)],
        "kv_over_cold_socket": kv / statistics.median(cold),
        "kv_over_cold_socket_per_round": _round_ratios(row["rounds"], cold),
    }


def _round_ratios(kv: list[float], socket_rates: list[float]) -> dict:
    """Each KV transfer ÷ the baseline round right after it: the median and range of those ratios."""
    ratios = [k / s for k, s in zip(kv, socket_rates, strict=True)]
    return {"median": statistics.median(ratios), "spread": [min(ratios), max(ratios)]}


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "send":
    _send_role(int(sys.argv[2]), sys.argv[3], sys.argv[4] == "cold", [int(n) for n in sys.argv[5:]])
