"""Does striping a KV transfer's layers over several TCP connections pay? (issue 18: "a separate framed
TCP connection, or several, if measured to pay")

Two processes, as the data connection: a sender holding a bulk transfer's layers (12 layers x keys and
values, framed like the data connection: a 32-byte header, then keys and values, one gather write
per connection with the data connection's own `kv.data_socket.send_all`) and a receiver that takes
each layer into its place in one buffer with one MSG_WAITALL scatter receive per layer. With N
connections, layer i travels on connection i % N; each connection has its own thread at both ends
(sendmsg and recvmsg_into release the interpreter lock), all started by one go byte on a control
connection. Goodput = bytes ÷ (go sent → every layer received), receiver's clock. The cases (N = 1,
2, 4 by default) take turns round by round, so the box's drift between minutes falls on all of them
alike; the first round of each is left out.

Usage (root for --link):
  python bench/kv_streams_probe.py [--rounds 15] [--tensor-kib 512] [--streams 1 2 4]
      [--placement shared|split|free] [--link 100mbit]
Placement: `shared` both processes on CPU 1 (bench/kv_transport.py's placement of the decode side
and the prefill worker's sender), `split` the sender on CPU 0 and the receiver on CPU 1, `free` both
on CPUs 0-1. `--link RATE` runs the two processes in two network namespaces joined by a veth pair
capped with tc tbf at RATE (tests/network/netns_link.py) instead of on loopback.
Prints one JSON object. Numbers: docs/benchmarks.md ("KV transfer").
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from hybrid_workers.kv.data_socket import send_all

LAYERS, HEADER = 12, 32
CPUS = {"shared": ({1}, {1}), "split": ({0}, {1}), "free": ({0, 1}, {0, 1})}  # sender, receiver


def _layers_of(index: int, streams: int) -> list[int]:
    return list(range(index, LAYERS, streams))


def sender(host: str, port: int, tensor: int, cases: list[int], cpus: set[int]) -> None:
    """Connect the control connection, then each case's connections; per go byte, each connection's
    thread writes its layers (one gather write: every header, keys and values)."""
    os.sched_setaffinity(0, cpus)
    payload = [os.urandom(tensor) for _ in range(2 * LAYERS)]
    deadline = time.monotonic() + 60
    while True:  # over --link the receiver starts in the other namespace meanwhile
        try:
            control = socket.create_connection((host, port))
            break
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    work: dict[int, list[queue.Queue]] = {}
    for streams in cases:
        work[streams] = []
        for index in range(streams):
            sock = socket.create_connection((host, port))
            todo: queue.Queue = queue.Queue()
            parts: list = []
            for layer in _layers_of(index, streams):
                parts += [layer.to_bytes(HEADER, "little"), payload[2 * layer], payload[2 * layer + 1]]

            def run(sock: socket.socket = sock, todo: queue.Queue = todo, parts: list = parts) -> None:
                while todo.get():
                    send_all(sock, parts)  # the data connection's gather write
                sock.close()

            threading.Thread(target=run, daemon=True).start()
            work[streams].append(todo)
    while True:
        go = control.recv(1)
        if not go:
            break
        for todo in work[go[0]]:
            todo.put(True)
    for todos in work.values():
        for todo in todos:
            todo.put(False)


def _receive_stream(
    conn: socket.socket, layers: list[int], view: memoryview, tensor: int, rounds: int, done: queue.Queue
) -> None:
    """One connection's receiving thread: per round, its layers into their places; then `done`."""
    head = bytearray(HEADER)
    for _ in range(rounds):
        for layer in layers:
            if conn.recv_into(head, HEADER, socket.MSG_WAITALL) != HEADER:
                return
            assert int.from_bytes(head, "little") == layer, "a layer on the wrong connection"
            parts = [view[(2 * layer + k) * tensor : (2 * layer + k + 1) * tensor] for k in (0, 1)]
            assert conn.recvmsg_into(parts, 0, socket.MSG_WAITALL)[0] == 2 * tensor
        done.put(None)


def receiver(listener: socket.socket, tensor: int, cases: list[int], rounds: int) -> dict:
    """Accept the control connection and each case's connections, then time `rounds` rounds per case,
    the cases in turn."""
    buffer = bytearray(2 * LAYERS * tensor)
    view = memoryview(buffer)
    control, _ = listener.accept()
    done: queue.Queue = queue.Queue()
    for streams in cases:
        for index in range(streams):
            conn, _ = listener.accept()
            layers = _layers_of(index, streams)
            threading.Thread(
                target=_receive_stream, args=(conn, layers, view, tensor, rounds, done), daemon=True
            ).start()
    rates: dict[int, list[float]] = {streams: [] for streams in cases}
    for _ in range(rounds):
        for streams in cases:
            start = time.perf_counter()
            control.sendall(bytes([streams]))
            for _ in range(streams):
                done.get()
            rates[streams].append(len(buffer) / (time.perf_counter() - start))
    control.close()
    return {
        str(streams): {
            "bytes_per_s": statistics.median(values[1:]),
            "spread": [min(values[1:]), max(values[1:])],
            "over_one_connection": statistics.median(values[1:]) / statistics.median(rates[cases[0]][1:]),
        }
        for streams, values in rates.items()
    }


def _run(args: argparse.Namespace) -> dict:
    send_cpus, receive_cpus = CPUS[args.placement]
    tensor = args.tensor_kib * 1024
    cases = ",".join(map(str, args.streams))
    if args.link is None:
        os.sched_setaffinity(0, receive_cpus)
        listener = socket.create_server(("127.0.0.1", 0))
        argv = [sys.executable, __file__, "send", "127.0.0.1", str(listener.getsockname()[1])]
        process = subprocess.Popen([*argv, str(tensor), cases, ",".join(map(str, send_cpus))])
        try:
            return receiver(listener, tensor, args.streams, args.rounds + 1)
        finally:
            process.wait(timeout=60)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "network"))
    from netns_link import run_decode_side, shaped_link

    with shaped_link(args.link) as link:
        port = 50061
        argv = [sys.executable, __file__, "send", link.decode_ip, str(port), str(tensor), cases]
        argv.append(",".join(map(str, send_cpus)))
        receive = [sys.executable, __file__, "receive", link.decode_ip, str(port), str(tensor), cases]
        receive += [str(args.rounds + 1), ",".join(map(str, receive_cpus))]
        process = None
        try:
            process = subprocess.Popen(link.argv(link.prefill_ns, argv))
            return json.loads(run_decode_side(link, receive, timeout_s=1800)[-1])
        finally:
            if process is not None:
                process.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--tensor-kib", type=int, default=512, help="one K or V tensor (512: 512 tokens)")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--placement", choices=sorted(CPUS), default="shared")
    parser.add_argument("--link", default=None, help="a tbf rate (e.g. 100mbit): over two namespaces")
    args = parser.parse_args()
    if args.streams[0] != 1 or any(not 1 <= n <= LAYERS for n in args.streams):
        parser.error(f"--streams: start with 1, each between 1 and {LAYERS}")
    result = {
        "load_average_at_start": Path("/proc/loadavg").read_text().strip(),
        "placement": args.placement,
        "link": args.link or "loopback",
        "tensor_bytes": args.tensor_kib * 1024,
        "rounds": args.rounds,
    }
    result["streams"] = _run(args)
    result["load_average_at_end"] = Path("/proc/loadavg").read_text().strip()
    print(json.dumps(result))


def _receive_role(host: str, port: int, tensor: int, cases: list[int], rounds: int, cpus: set[int]) -> None:
    os.sched_setaffinity(0, cpus)
    listener = socket.create_server((host, port))
    print(json.dumps(receiver(listener, tensor, cases, rounds)), flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("send", "receive"):
        host, port, tensor = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        cases = [int(n) for n in sys.argv[5].split(",")]
        if sys.argv[1] == "send":
            sender(host, port, tensor, cases, {int(c) for c in sys.argv[6].split(",")})
        else:
            _receive_role(
                host, port, tensor, cases, int(sys.argv[6]), {int(c) for c in sys.argv[7].split(",")}
            )
    else:
        main()
