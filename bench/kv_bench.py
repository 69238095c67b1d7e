"""KV transfer benchmark: layerwise vs bulk over a 100 Mbit/s netns link, loopback goodput, decode TPS.

Run as root from a source checkout: `python bench/kv_bench.py [--model DIR] [--out results.json]
[--plot docs/img/kv_timeline.png]` (default model: the cached `bench` demo model, float32; prompt 512
tokens). In one run it measures:
1. over two network namespaces joined by a veth pair capped with `tc tbf` at 100 Mbit/s (prefill
   worker process in one, this script's client role in the other): TTFT and exposed transfer per
   mode, one layer's transfer time, KV goodput ÷ link rate (bulk, measured as on loopback);
2. on loopback: KV goodput of the gRPC KV transfer (bulk: bytes after the first chunk ÷ first-to-last
   chunk time on the decode clock) vs a plain TCP socket sending the same bytes in the same chunks;
3. decode tokens/s continuing from a remote prefill's cache vs from a local prefill's cache;
4. compression (bytes saved, greedy tokens equal to `none`, max logit error) and an A/B of the chunk
   serialization paths against raw grpcio (bench/kv_wire_paths.py);
and plots one request's timeline per mode (per-layer compute vs per-layer transfer).
Prints JSON. Speed numbers go to docs/benchmarks.md ("KV transfer"), never into tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "network"))  # the netns helper shared with the network tests
PROMPT_TOKENS = int(os.environ.get("KV_BENCH_PROMPT_TOKENS", "512"))  # smaller: a quick smoke run
LINK_RATE = "100mbit"
LINK_BITS_PER_S = 100e6
DECODE_TOKENS = 32


def prompt(lm) -> list[int]:  # -> token ids: BOS, then deterministic ids clear of special tokens
    rng = np.random.default_rng(0)
    return [1, *rng.integers(8, lm.vocab_size, PROMPT_TOKENS - 1).tolist()]


def load(model: str | None):  # -> LoadedModel
    from hybrid_workers.engine import demo_model_dir, load_model

    return load_model(model or str(demo_model_dir("bench")), device="cpu", dtype="float32", progress=False)


def remote_runs(target: str, lm, modes: list[str], repeats: int) -> dict[str, list[dict]]:
    """Interleaved remote prefills per mode (after one warm-up); each run's timings as a dict."""
    from hybrid_workers.decode.prefill_client import PrefillClient
    from hybrid_workers.engine import SamplingParams

    greedy = SamplingParams(max_tokens=1, temperature=0)
    runs: dict[str, list[dict]] = {mode: [] for mode in modes}
    clients = {mode: PrefillClient(target, lm, mode=mode, timeout_s=300) for mode in modes}
    clients[modes[0]].prefill(prompt(lm), greedy)  # warm-up: allocator, connection, kernels
    for _ in range(repeats):
        for mode in modes:
            runs[mode].append(dataclasses.asdict(clients[mode].prefill(prompt(lm), greedy).timings))
    for client in clients.values():
        client.close()
    return runs


def client_role(args: argparse.Namespace) -> None:
    """Inside the decode namespace: remote prefills over the shaped link, one JSON object to stdout."""
    lm = load(args.model)
    runs = remote_runs(args.target, lm, ["bulk", "layerwise"], args.repeats)
    print(json.dumps({"runs": runs, "num_layers": lm.num_layers}), flush=True)


def summarize_link(result: dict) -> dict:
    """Medians per mode and the goals' ratios for the shaped link."""
    med = {m: {k: statistics.median(r[k] for r in rs) for k in ("total_s", "exposed_transfer_s", "bytes")}
           for m, rs in result["runs"].items()}  # fmt: skip
    layer_bytes = med["bulk"]["bytes"] / result["num_layers"]
    layer_send_s = layer_bytes * 8 / LINK_BITS_PER_S  # one layer at line rate
    measured_layer_s = med["bulk"]["exposed_transfer_s"] / result["num_layers"]
    return {
        "ttft_s": {m: v["total_s"] for m, v in med.items()},
        "exposed_transfer_s": {m: v["exposed_transfer_s"] for m, v in med.items()},
        "kv_bytes": med["bulk"]["bytes"],
        "one_layer_transfer_s_line_rate": layer_send_s,
        "one_layer_transfer_s_measured": measured_layer_s,
        "layerwise_exposed_over_one_layer": med["layerwise"]["exposed_transfer_s"] / measured_layer_s,
        "ttft_layerwise_over_bulk": med["layerwise"]["total_s"] / med["bulk"]["total_s"],
        **same_compute_ttft(result["runs"]),
        "goodput_over_link_rate": statistics.median(map(stream_goodput, result["runs"]["bulk"]))
        * 8
        / LINK_BITS_PER_S,
        "bulk_bytes_over_exposed_over_link_rate": med["bulk"]["bytes"]
        * 8
        / med["bulk"]["exposed_transfer_s"]
        / LINK_BITS_PER_S,
    }


def same_compute_ttft(runs: dict[str, list[dict]]) -> dict:
    """TTFT per mode had both modes' prefill taken the same (median) compute time.

    On a busy 2-core box the prefill's compute time varies run to run by more than the transfer;
    this removes that noise: median compute of all runs + each mode's median (TTFT - compute).
    """
    compute = statistics.median(r["prefill_compute_s"] for rs in runs.values() for r in rs)
    ttft = {
        m: compute + statistics.median(r["total_s"] - r["prefill_compute_s"] for r in rs)
        for m, rs in runs.items()
    }
    return {
        "median_prefill_compute_s": compute,
        "ttft_same_compute_s": ttft,
        "ttft_layerwise_over_bulk_same_compute": ttft["layerwise"] / ttft["bulk"],
    }


def stream_goodput(run: dict) -> float:
    """Bytes/s of the KV stream on the decode clock: what arrived after the first chunk ÷ the time it took.

    The first chunk's own bytes are left out because its start is not observed (it is the start).
    """
    chunk = run["bytes"] / (2 * len(run["layer_done_at_s"]))  # one K or V tensor = one chunk here (< 4 MiB)
    return (run["bytes"] - chunk) / run["transfer_s"]


def over_link(args: argparse.Namespace) -> dict:
    """Prefill worker in one namespace, this script's client role in the other."""
    from netns_link import shaped_link, skip_reason

    reason = skip_reason()
    if reason:
        return {"skipped": reason}
    model = args.model or str(_bench_dir())
    with shaped_link(LINK_RATE) as link:
        worker = [sys.executable, "-m", "hybrid_workers", "prefill", "--model", model, "--device", "cpu"]
        worker += ["--dtype", "float32", "--host", link.prefill_ip, "--port", "50051", "--metrics-port", "0"]
        server = subprocess.Popen(link.argv(link.prefill_ns, worker), stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None and "prefill worker" in server.stdout.readline()
            client = [sys.executable, __file__, "client", "--target", f"{link.prefill_ip}:50051"]
            client += ["--model", model, "--repeats", str(args.repeats)]
            done = subprocess.run(
                link.argv(link.decode_ns, client), capture_output=True, text=True, check=True
            )
        finally:
            server.terminate()
            server.wait(timeout=60)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"link": LINK_RATE, **summarize_link(result), "runs": result["runs"]}


def _bench_dir() -> Path:
    from hybrid_workers.engine import demo_model_dir

    return demo_model_dir("bench")


def socket_goodput(sizes: list[int]) -> float:
    """Bytes/s of a plain TCP socket on loopback sending `sizes` chunks (sender start -> all received)."""
    payload = [
        np.random.default_rng(i).integers(0, 255, n, dtype=np.uint8).tobytes() for i, n in enumerate(sizes)
    ]
    total = sum(sizes)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        buffer = bytearray(total)

        def receive() -> None:
            conn, _ = listener.accept()
            view, got = memoryview(buffer), 0
            while got < total:
                got += conn.recv_into(view[got:])
            conn.close()

        receiver = threading.Thread(target=receive)
        receiver.start()
        with socket.create_connection(listener.getsockname()) as sender:
            start = time.perf_counter()
            for piece in payload:
                sender.sendall(piece)
            receiver.join()
            return total / (time.perf_counter() - start)


def on_loopback(lm, repeats: int) -> dict:
    """gRPC KV transfer goodput (bulk) vs a plain socket with the same chunks; decode TPS remote vs local."""
    from hybrid_workers.prefill.config import PrefillServerConfig
    from hybrid_workers.prefill.server import start_server
    from kv_wire_paths import wire_paths  # next to this script

    running = start_server(lm, PrefillServerConfig(host="127.0.0.1", port=0))
    try:
        runs = remote_runs(f"127.0.0.1:{running.port}", lm, ["bulk"], repeats)["bulk"]
        tps = decode_tps(f"127.0.0.1:{running.port}", lm, 2 * repeats)
        compression = compression_effect(f"127.0.0.1:{running.port}", lm)
    finally:
        running.stop(grace_s=0)
    kv_bytes = runs[0]["bytes"]
    layer_tensor = kv_bytes // (2 * lm.num_layers)  # one K or V tensor: one chunk each (< 4 MiB)
    grpc_goodput = statistics.median(map(stream_goodput, runs))
    plain = statistics.median(socket_goodput([layer_tensor] * 2 * lm.num_layers) for _ in range(repeats))
    return {
        "grpc_goodput_bytes_per_s": grpc_goodput,
        "socket_goodput_bytes_per_s": plain,
        "grpc_over_socket": grpc_goodput / plain,
        **tps,
        "compression": compression,
        "wire_paths": wire_paths(),  # A/B of the serialization paths (bench/kv_wire_paths.py)
    }


def compression_effect(target: str, lm) -> dict:
    """Per encoding: wire bytes, greedy tokens agreeing with `none`, max logit error of decode step 1."""
    from hybrid_workers.decode.prefill_client import PrefillClient

    ids = prompt(lm)
    out: dict[str, dict] = {}
    for encoding in ("none", "fp8", "int8"):
        with PrefillClient(target, lm, encoding=encoding) as client:
            tokens, wire_bytes = greedy_after_remote(client, lm, ids)
            logits = step_one_logits(client, lm, ids)
        out[encoding] = {"bytes": wire_bytes, "tokens": tokens, "logits": logits}
    report = {"none": {"bytes": out["none"]["bytes"]}}
    for encoding in ("fp8", "int8"):
        pairs = zip(out[encoding]["tokens"], out["none"]["tokens"], strict=True)
        report[encoding] = {
            "bytes": out[encoding]["bytes"],
            "bytes_saved": 1 - out[encoding]["bytes"] / out["none"]["bytes"],
            "greedy_match_tokens": next((i for i, (a, b) in enumerate(pairs) if a != b), DECODE_TOKENS),
            "of_tokens": DECODE_TOKENS,
            "max_logit_error": float((out[encoding]["logits"] - out["none"]["logits"]).abs().max()),
        }
    return report


def greedy_after_remote(client, lm, ids: list[int]) -> tuple[list[int], int]:
    """DECODE_TOKENS greedy tokens (the remote first one, then local decode) and the KV wire bytes."""
    from hybrid_workers.engine import SamplingParams, decode

    greedy = SamplingParams(max_tokens=DECODE_TOKENS, temperature=0)
    remote = client.prefill(ids, greedy)
    steps = decode(lm, remote.cache, remote.first_token, len(ids), greedy)
    rest = [step.token_id for step, _ in zip(steps, range(DECODE_TOKENS - 1), strict=False)]
    return [remote.first_token, *rest], remote.timings.bytes


def step_one_logits(client, lm, ids: list[int]):  # -> [vocab] float32
    """Logits after the first token, from a fresh remote prefill's cache."""
    import torch
    from hybrid_workers.engine import SamplingParams
    from hybrid_workers.engine.decode import forward_one

    remote = client.prefill(ids, SamplingParams(max_tokens=2, temperature=0))
    with torch.no_grad():
        return forward_one(lm, remote.cache, remote.first_token, len(ids))


def decode_tps(target: str, lm, repeats: int) -> dict:
    """Median decode tokens/s continuing from a remote prefill's cache and from a local one (interleaved)."""
    from hybrid_workers.decode.prefill_client import PrefillClient
    from hybrid_workers.engine import SamplingParams, decode, prefill, sample

    greedy = SamplingParams(max_tokens=DECODE_TOKENS, temperature=0)
    ids = prompt(lm)

    def timed(cache, first: int) -> float:
        steps = decode(lm, cache, first, len(ids), greedy)
        start = time.perf_counter()
        for _step, _ in zip(steps, range(DECODE_TOKENS), strict=False):
            pass
        return DECODE_TOKENS / (time.perf_counter() - start)

    remote, local = [], []
    with PrefillClient(target, lm) as client:
        for _ in range(repeats):
            got = client.prefill(ids, greedy)
            remote.append(timed(got.cache, got.first_token))
            result = prefill(lm, ids)
            local.append(timed(result.cache, sample(result.logits, greedy, 0)[0]))
    return {
        "decode_tps_after_remote": statistics.median(remote),
        "decode_tps_after_local": statistics.median(local),
        "decode_tps_remote_over_local": statistics.median(remote) / statistics.median(local),
    }


def plot(link: dict, path: Path) -> None:
    """One request per mode: per-layer compute (prefill clock) and transfer (decode clock) bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = ["layerwise", "bulk"]
    fig, axes = plt.subplots(len(modes), 1, figsize=(10, 5.5), sharex=True)
    for axis, mode in zip(axes, modes, strict=True):
        run = link["runs"][mode][0]
        done, compute, received = run["layer_done_at_s"], run["layer_compute_s"], run["layer_received_at_s"]
        for i, (end, seconds) in enumerate(zip(done, compute, strict=True)):
            axis.barh(1, seconds, left=end - seconds, color="tab:blue", edgecolor="white")
            start = max(end if mode == "layerwise" else done[-1], received[i - 1] if i else 0.0)
            axis.barh(0, received[i] - start, left=start, color="tab:orange", edgecolor="white")
            axis.text(received[i], -0.45, str(i), fontsize=7, ha="right")
        axis.axvline(run["total_s"], color="black", linestyle="--", linewidth=1)
        axis.set_yticks([0, 1], ["transfer (decode)", "compute (prefill)"])
        axis.set_title(
            f"{mode}: TTFT {run['total_s']:.2f} s, exposed transfer {run['exposed_transfer_s'] * 1000:.0f} ms"
        )
    axes[-1].set_xlabel(
        f"seconds since the request (bench model, fp32, {PROMPT_TOKENS} tokens, {LINK_RATE} tbf)"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", nargs="?", default="bench", choices=["bench", "client"])
    parser.add_argument("--model", default=None, help="model folder (default: the bench demo model)")
    parser.add_argument("--target", default=None, help="client role: HOST:PORT of the prefill worker")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument(
        "--plot",
        type=Path,
        default=None,
        help="write the timeline PNG here (none: no plot)",
    )
    args = parser.parse_args()
    if args.role == "client":
        client_role(args)
        return
    import torch

    torch.set_num_threads(2)
    results = {"prompt_tokens": PROMPT_TOKENS, "link": over_link(args)}
    results["loopback"] = on_loopback(load(args.model), args.repeats)
    if "runs" in results["link"] and args.plot is not None:
        plot(results["link"], args.plot)
        results["plot"] = str(args.plot)
    summary = {**results, "link": {k: v for k, v in results["link"].items() if k != "runs"}}
    print(json.dumps(summary, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
