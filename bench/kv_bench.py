"""KV transfer benchmark: the data connection vs gRPC frames over a 100 Mbit/s netns link and loopback.

Run as root from a source checkout: `python bench/kv_bench.py [--model DIR] [--repeats N]
[--out results.json] [--plot docs/img/kv_timeline.png] [--extras] [--skip-link | --skip-loopback]`
(default model: the cached `bench` demo model, float32; prompt 512 tokens). Placement, as on a GPU
node whose compute does not share cores with the network: the prefill worker's compute thread on
CPU 0 with one torch thread (`--compute-cpus 0`, OMP_NUM_THREADS=1), its gRPC and data-connection
threads, the decode client and the receivers on CPU 1. In one run it measures:
1. over two network namespaces joined by a veth pair capped with `tc tbf` at 100 Mbit/s (prefill
   worker process in one, this script's client role in the other), per transport (`tcp`: the data
   connection, `grpc`: frames) and mode, interleaved: TTFT, prefill compute, goodput ÷ the cap
   (bulk), TTFT remote − colocated in layer-times, compute while streaming ÷ without, TTFT
   layerwise ÷ bulk next to its ideal bound; the two compute-dependent goals also per round (each
   layerwise request against its round's bulk one) and TTFT − colocated split into what the stream
   adds after the request's own compute plus the compute slowdown; and the compute lane thread's
   CPU time, CPU wait and CPU 0's steal per request (LaneClock), so a slower compute can be told
   apart from a compute that lost its CPU;
2. on loopback: the data connection's goodput ÷ a plain socket with recv_into, and over TLS ÷ a TLS
   socket (bench/kv_transport.py; prefill worker in its own process, as deployed), for the 512-token
   prompt and, with --large-tokens N, an N-token one (a bigger transfer per layer), bulk rows and a
   layerwise one (wire goodput); `--sender-cpu 0` gives the sending side (the prefill worker process,
   the baseline's sender) CPU 0 to itself there;
3. with --extras: decode tokens/s after a remote vs a local prefill, compression, and the gRPC chunk
   serialization A/B (bench/kv_wire_paths.py);
and plots one request's timeline per mode (per-layer compute vs per-layer transfer).
Prints JSON. Speed numbers go to docs/benchmarks.md ("KV transfer"), never into tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "network"))  # the netns helper shared with the network tests
PROMPT_TOKENS = int(os.environ.get("KV_BENCH_PROMPT_TOKENS", "512"))  # smaller: a quick smoke run
LINK_RATE = "100mbit"
LINK_BITS_PER_S = 100e6
DECODE_TOKENS = 32
TRANSPORTS = ("tcp", "grpc")
MODES = ("bulk", "layerwise")


def prompt(lm, tokens: int = PROMPT_TOKENS) -> list[int]:  # -> ids: BOS, then deterministic non-special
    rng = np.random.default_rng(0)
    return [1, *rng.integers(8, lm.vocab_size, tokens - 1).tolist()]


def load(model: str | None):  # -> LoadedModel
    from hybrid_workers.engine import demo_model_dir, load_model

    return load_model(model or str(demo_model_dir("bench")), device="cpu", dtype="float32", progress=False)


def remote_runs(target: str, lm, repeats: int) -> dict[str, dict[str, list[dict]]]:
    """Interleaved remote prefills per transport and mode (after a warm-up); each run's timings."""
    from hybrid_workers.decode.prefill_client import PrefillClient
    from hybrid_workers.engine import SamplingParams

    greedy = SamplingParams(max_tokens=1, temperature=0)
    runs: dict[str, dict[str, list[dict]]] = {t: {m: [] for m in MODES} for t in TRANSPORTS}
    clients = {
        (t, m): PrefillClient(target, lm, mode=m, timeout_s=300, data_connection=t == "tcp")
        for t in TRANSPORTS
        for m in MODES
    }
    for client in clients.values():
        client.prefill(prompt(lm), greedy)  # warm-up: allocator, connection, kernels (and the lane thread)
    lane = LaneClock(target.rsplit(":", 1)[0])
    for _ in range(repeats):
        for (transport, mode), client in clients.items():
            before = lane.read()
            timings = client.prefill(prompt(lm), greedy).timings
            after = lane.read()
            assert timings.transport == transport, (timings.transport, transport)
            lane_use = {key: after[key] - before[key] for key in after}
            runs[transport][mode].append(dataclasses.asdict(timings) | lane_use)
    for client in clients.values():
        client.close()
    return runs


class LaneClock:
    """What the prefill worker's compute lane got from its CPU, read from /proc (the worker runs in
    another network namespace, not another PID namespace): the lane thread's time on the CPU and time
    waiting for it (`/proc/PID/task/TID/schedstat`, nanoseconds; the kernel leaves the hypervisor's
    steal out of both), and the time the hypervisor took from CPU 0 (`/proc/stat` steal, ticks of
    1/100 s). The lane is the worker's only thread pinned to CPU 0 alone (`--compute-cpus 0`)."""

    def __init__(self, host: str) -> None:
        workers = [
            p
            for p in os.listdir("/proc")
            if p.isdigit() and _is_prefill_worker(Path("/proc", p, "cmdline"), host)
        ]
        lanes = [
            task / "schedstat"
            for worker in workers
            for task in Path("/proc", worker, "task").iterdir()
            if "Cpus_allowed_list:\t0\n" in (task / "status").read_text()
        ]
        if len(lanes) != 1:
            raise RuntimeError(
                f"{len(lanes)} threads pinned to CPU 0 alone in prefill workers at {host}: expected the lane"
            )
        self._schedstat = lanes[0]

    def read(self) -> dict[str, float]:
        on_cpu, waiting, _ = (int(n) for n in self._schedstat.read_text().split())
        cpu0 = next(line for line in Path("/proc/stat").read_text().splitlines() if line.startswith("cpu0 "))
        return {
            "lane_cpu_s": on_cpu / 1e9,
            "lane_wait_s": waiting / 1e9,
            "cpu0_steal_s": int(cpu0.split()[8]) / 100,
        }


def _is_prefill_worker(cmdline: Path, host: str) -> bool:
    try:
        argv = cmdline.read_bytes().split(b"\0")
    except OSError:  # gone meanwhile
        return False
    return b"hybrid_workers" in argv and b"prefill" in argv and host.encode() in argv


def client_role(args: argparse.Namespace) -> None:
    """Inside the decode namespace: remote prefills over the shaped link, one JSON object to stdout."""
    import torch

    torch.set_num_threads(1)
    lm = load(args.model)
    runs = remote_runs(args.target, lm, args.repeats)
    print(json.dumps({"runs": runs, "num_layers": lm.num_layers}), flush=True)


def _median(values) -> float:
    return statistics.median(values)


def _spread(values) -> list[float]:
    values = list(values)
    return [min(values), max(values)]


def summarize_link(runs: dict[str, list[dict]], num_layers: int) -> dict:
    """One transport's figures over the shaped link, with the issue's goals."""
    bulk, layerwise = runs["bulk"], runs["layerwise"]
    kv_bytes = bulk[0]["bytes"]
    layer_time = kv_bytes / num_layers * 8 / LINK_BITS_PER_S  # one layer at the cap
    compute_bulk = _median(r["prefill_compute_s"] for r in bulk)
    compute_layerwise = _median(r["prefill_compute_s"] for r in layerwise)
    ttft = {m: _median(r["total_s"] for r in rs) for m, rs in runs.items()}
    goodput = [stream_goodput(r) for r in bulk]
    colocated = compute_bulk  # the same prompt, same cores, no transfer: what a colocated prefill costs
    ideal = (compute_bulk + layer_time) / (compute_bulk + num_layers * layer_time)
    return {
        "kv_bytes": kv_bytes,
        "layer_time_s": layer_time,
        "ttft_s": ttft,
        "ttft_spread_s": {m: _spread(r["total_s"] for r in rs) for m, rs in runs.items()},
        "prefill_compute_s": {"bulk": compute_bulk, "layerwise": compute_layerwise},
        "prefill_compute_spread_s": {
            m: _spread(r["prefill_compute_s"] for r in rs) for m, rs in runs.items()
        },
        "goodput_over_cap": _median(goodput) * 8 / LINK_BITS_PER_S,
        "goodput_over_cap_spread": [g * 8 / LINK_BITS_PER_S for g in _spread(goodput)],
        "wire_goodput_over_cap": _median(r["goodput_bytes_per_s"] for r in bulk) * 8 / LINK_BITS_PER_S,
        "ttft_remote_minus_colocated_layer_times": (ttft["layerwise"] - colocated) / layer_time,
        "compute_streaming_over_without": compute_bulk / compute_layerwise,
        **paired_rounds(bulk, layerwise, layer_time),
        **lane_figures(bulk, layerwise),
        "ttft_layerwise_over_bulk": ttft["layerwise"] / ttft["bulk"],
        "ttft_layerwise_over_bulk_ideal": ideal,
        "exposed_transfer_s": {m: _median(r["exposed_transfer_s"] for r in rs) for m, rs in runs.items()},
    }


def median_spread(values: list[float]) -> dict:
    return {"median": _median(values), "spread": _spread(values)}


def paired_rounds(bulk: list[dict], layerwise: list[dict], layer_time: float) -> dict:
    """The two compute-dependent goals per round (each layerwise request against the bulk request of
    its round, which ran just before it), and TTFT remote − colocated split in two: what the stream
    adds after the request's own compute (layerwise TTFT − its compute: the tail and the hand-off, one
    request, no noise from another's compute) plus the compute slowdown (layerwise compute − bulk)."""
    pairs = list(zip(bulk, layerwise, strict=True))
    return {
        "per_round": {
            "ttft_remote_minus_colocated_layer_times": median_spread(
                [(w["total_s"] - b["prefill_compute_s"]) / layer_time for b, w in pairs]
            ),
            "compute_streaming_over_without": median_spread(
                [b["prefill_compute_s"] / w["prefill_compute_s"] for b, w in pairs]
            ),
        },
        "ttft_after_own_compute_layer_times": median_spread(
            [(w["total_s"] - w["prefill_compute_s"]) / layer_time for w in layerwise]
        ),
        "compute_slowdown_layer_times": median_spread(
            [(w["prefill_compute_s"] - b["prefill_compute_s"]) / layer_time for b, w in pairs]
        ),
    }


def lane_figures(bulk: list[dict], layerwise: list[dict]) -> dict:
    """Compute while streaming ÷ without on the lane thread's CPU time (what the sender could take from
    it: shared caches, memory bandwidth, interrupts on its core), and where the wall time went besides:
    waiting for the CPU, the hypervisor's steal."""
    if "lane_cpu_s" not in bulk[0]:
        return {}

    def per(key: str) -> dict:
        return {
            mode: median_spread([r[key] for r in rs])
            for mode, rs in (("bulk", bulk), ("layerwise", layerwise))
        }

    ratios = [b["lane_cpu_s"] / w["lane_cpu_s"] for b, w in zip(bulk, layerwise, strict=True)]
    return {
        "lane_cpu_s": per("lane_cpu_s"),
        "lane_wait_s": per("lane_wait_s"),
        "cpu0_steal_s": per("cpu0_steal_s"),
        "compute_cpu_streaming_over_without": _median(r["lane_cpu_s"] for r in bulk)
        / _median(r["lane_cpu_s"] for r in layerwise),
        "compute_cpu_streaming_over_without_per_round": median_spread(ratios),
    }


def stream_goodput(run: dict) -> float:
    """Bytes/s of a bulk stream on the decode clock: what arrived after the first receipt ÷ the time it
    took (the first receipt's own bytes are left out: one K or V tensor for gRPC frames, a few bytes
    up to a socket buffer for the data connection, so this errs low there)."""
    first = run["bytes"] / (2 * len(run["layer_done_at_s"]))  # one K or V tensor (< 4 MiB: one chunk)
    return (run["bytes"] - first) / run["transfer_s"]


def over_link(args: argparse.Namespace) -> dict:
    """Prefill worker in one namespace (compute on CPU 0), this script's client role in the other (CPU 1)."""
    from netns_link import prefill_across, prefill_cli, run_decode_side, skip_reason

    reason = skip_reason()
    if reason:
        return {"skipped": reason}
    model = args.model or str(_bench_dir())
    os.environ["OMP_NUM_THREADS"] = "1"  # the workers' torch threads (inherited through ip netns exec)

    def worker(link) -> list[str]:
        argv = prefill_cli(link, model, "--dtype", "float32", "--compute-cpus", "0")
        return ["taskset", "-c", "0,1", *argv]

    with prefill_across(LINK_RATE, worker) as link:
        client = ["taskset", "-c", "1", sys.executable, __file__, "client"]
        client += ["--target", f"{link.prefill_ip}:50051", "--model", model, "--repeats", str(args.repeats)]
        result = json.loads(run_decode_side(link, client, timeout_s=1800)[-1])
    summary = {t: summarize_link(result["runs"][t], result["num_layers"]) for t in TRANSPORTS}
    return {"link": LINK_RATE, **summary, "runs": result["runs"]}


def _bench_dir() -> Path:
    from hybrid_workers.engine import demo_model_dir

    return demo_model_dir("bench")


def on_loopback(
    lm, model: str | None, repeats: int, tokens: int = PROMPT_TOKENS, sender_cpu: int = 1
) -> dict:
    """The data connection's goodput ÷ a plain socket, and over TLS ÷ a TLS socket (kv_transport.py),
    for a `tokens`-token prompt, the sending side on `sender_cpu`."""
    import tempfile

    from kv_transport import loopback_transport  # next to this script

    sys.path.insert(0, str(ROOT / "tests"))
    from support.pki import write_tls_dir

    with tempfile.TemporaryDirectory() as folder:
        tls_dir = write_tls_dir(Path(folder))
        ids = prompt(lm, tokens)
        results = loopback_transport(lm, model or str(_bench_dir()), ids, repeats, tls_dir, sender_cpu)
    return {"prompt_tokens": tokens, **results}


def extras(lm, repeats: int) -> dict:
    """Decode TPS after a remote vs a local prefill, compression, and the gRPC serialization A/B."""
    from hybrid_workers.prefill.config import PrefillServerConfig
    from hybrid_workers.prefill.server import start_server
    from kv_wire_paths import wire_paths  # next to this script

    running = start_server(lm, PrefillServerConfig(host="127.0.0.1", port=0))
    try:
        tps = decode_tps(f"127.0.0.1:{running.port}", lm, 2 * repeats)
        compression = compression_effect(f"127.0.0.1:{running.port}", lm)
    finally:
        running.stop(grace_s=0)
    return {**tps, "compression": compression, "wire_paths": wire_paths()}


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
        run = link["runs"]["tcp"][mode][0]
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
    parser.add_argument("--plot", type=Path, default=None, help="write the timeline PNG here (none: no plot)")
    parser.add_argument("--extras", action="store_true", help="also decode TPS, compression, gRPC paths")
    parser.add_argument("--skip-link", action="store_true", help="loopback only (no root needed)")
    parser.add_argument("--skip-loopback", action="store_true", help="the shaped link only")
    parser.add_argument(
        "--large-tokens",
        type=int,
        default=0,
        help="also measure loopback with a prompt of this many tokens (the bench model's context: 2048 = "
        "4 MiB per layer, 48 MiB of KV), beside the 512-token row",
    )
    parser.add_argument(
        "--sender-cpu",
        type=int,
        choices=[0, 1],
        default=1,
        help="loopback: the CPU of the sending side (the prefill worker's gRPC and data threads, the "
        "baseline's sender); 1 (default) shares CPU 1 with the receiver, 0 gives it its own core",
    )
    args = parser.parse_args()
    if args.role == "client":
        client_role(args)
        return
    import torch

    torch.set_num_threads(1)
    started = time.time()
    results: dict = {"prompt_tokens": PROMPT_TOKENS, "loadavg_at_start": Path("/proc/loadavg").read_text()}
    results["link"] = {"skipped": "--skip-link"} if args.skip_link else over_link(args)
    lm = load(args.model)
    if not args.skip_loopback:
        results["loopback"] = on_loopback(lm, args.model, args.repeats, sender_cpu=args.sender_cpu)
    if args.large_tokens and not args.skip_loopback:
        results["loopback_large"] = on_loopback(
            lm, args.model, args.repeats, args.large_tokens, args.sender_cpu
        )
    if args.extras:
        results["extras"] = extras(lm, args.repeats)
    if "runs" in results["link"] and args.plot is not None:
        plot(results["link"], args.plot)
        results["plot"] = str(args.plot)
    results["seconds"] = time.time() - started
    results["loadavg_at_end"] = Path("/proc/loadavg").read_text()
    summary = {**results, "link": {k: v for k, v in results["link"].items() if k != "runs"}}
    print(json.dumps(summary, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
