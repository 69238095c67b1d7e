"""HTTP API benchmark: TTFT and decode TPS through the decode worker, colocated vs remote prefill.

Run: `python bench/http_bench.py [--preset bench] [--prompt-tokens 256] [--output-tokens 32]
[--out results.json]`. It starts real worker processes on loopback (`hybrid-inference prefill`, and
`hybrid-inference decode` twice: without `--prefill` = colocated, with it = remote prefill), then:
- for 1 client (sequential requests) and 8 concurrent clients, streams greedy completions and
  measures TTFT (request sent -> first token chunk, client-side) and decode tokens/s per request
  (the server's `decode_tokens_per_second` histogram, which uses production times);
- alternates the same request through the engine alone (`stream_completion` in a thread of this
  process) and through the idle HTTP worker: the HTTP/SSE/JSON overhead per token.
Prints JSON. Speed numbers belong here and in docs/benchmarks.md, never in tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

# Idle OpenMP threads of one worker must not spin on the 2 cores the other one needs (set before torch).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import httpx
import torch
from hybrid_workers.engine import LoadedModel, SamplingParams, load_model, stream_completion
from hybrid_workers.engine.demo_model import demo_model_dir
from prometheus_client.parser import text_string_to_metric_families


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def worker(role: str, args: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A worker process for the duration of the block (stopped with SIGINT, then killed)."""
    argv = [sys.executable, "-m", "hybrid_workers", role, "--device", "cpu", *args]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def wait_ready(url: str, timeout_s: float = 600.0) -> None:
    """Block until GET url/ready answers 200."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready after {timeout_s} s")


async def one_request(client: httpx.AsyncClient, body: dict) -> dict[str, float]:
    """Stream one completion; client-side TTFT and end-to-end time (request sent -> last chunk).

    Decode speed is taken from the server's metrics instead: chunks that queued while the response
    started arrive in a burst, so client-side gaps between chunks understate the time per token.
    """
    sent = time.perf_counter()
    stamps: list[float] = []
    async with client.stream("POST", "/v1/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line.startswith("data: {"):
                stamps.append(time.perf_counter())
    return {"ttft_s": stamps[0] - sent, "e2e_s": stamps[-1] - sent, "tokens": float(len(stamps))}


async def load(url: str, body: dict, clients: int, rounds: int) -> list[dict[str, float]]:
    """`clients` concurrent clients, each sending `rounds` requests back to back."""
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:

        async def client_loop() -> list[dict[str, float]]:
            return [await one_request(client, body) for _ in range(rounds)]

        per_client = await asyncio.gather(*(client_loop() for _ in range(clients)))
    return [result for results in per_client for result in results]


def summary(results: list[dict[str, float]], server_tps: float) -> dict[str, float]:
    """Medians over requests (and TTFT p90), with the server's mean per-request decode TPS."""
    ttfts = sorted(r["ttft_s"] for r in results)
    return {
        "requests": len(results),
        "ttft_median_s": statistics.median(ttfts),
        "ttft_p90_s": ttfts[min(len(ttfts) - 1, int(0.9 * len(ttfts)))],
        "e2e_median_s": statistics.median(r["e2e_s"] for r in results),
        "decode_tps_mean": server_tps,
    }


def server_tps(url: str) -> tuple[float, float]:
    """(sum, count) of the server's decode_tokens_per_second histogram, over all label sets."""
    total = count = 0.0
    for family in text_string_to_metric_families(httpx.get(url + "/metrics").text):
        if family.name == "hybrid_inference_decode_tokens_per_second":
            for sample in family.samples:
                total += sample.value if sample.name.endswith("_sum") else 0.0
                count += sample.value if sample.name.endswith("_count") else 0.0
    return total, count


def phase(url: str, body: dict, clients: int, rounds: int) -> dict[str, float]:
    """One load phase: client-side timings plus the server's decode TPS over the phase's requests."""
    before = server_tps(url)
    results = asyncio.run(load(url, body, clients, rounds))
    after = server_tps(url)
    tps = (after[0] - before[0]) / max(1.0, after[1] - before[1])
    return summary(results, tps)


def engine_e2e(lm: LoadedModel, prompt_ids: list[int], params: SamplingParams) -> float:
    """Seconds for one stream_completion (prefill + all tokens) in this process, no HTTP.

    Runs in a worker thread, as the decode worker does: on this loaded 2-core machine torch in the
    main thread measured several times slower per token than in a worker thread.
    """

    def timed() -> float:
        start = time.perf_counter()
        for _ in stream_completion(lm, prompt_ids, params):
            pass
        return time.perf_counter() - start

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(timed).result()


def interleaved_overhead(url: str, lm: LoadedModel, body: dict, rounds: int) -> dict[str, float]:
    """Engine alone vs the same request through the (otherwise idle) HTTP worker, alternated so
    that both see the same machine load: medians of the end-to-end time, and the difference per token
    (HTTP request, JSON, SSE framing, event-loop thread switches; the engine's own work is identical)."""
    params = SamplingParams(max_tokens=body["max_tokens"], temperature=0)
    engine_e2e(lm, body["prompt"][0], params)  # warm-up: lazy initialisation
    engine, http, tokens = [], [], 1.0
    for _ in range(rounds):
        engine.append(engine_e2e(lm, body["prompt"][0], params))
        result = asyncio.run(load(url, body, 1, 1))[0]
        http.append(result["e2e_s"])
        tokens = result["tokens"]
    engine_s, http_s = statistics.median(engine), statistics.median(http)
    return {
        "tokens": tokens,
        "engine_alone_e2e_s": engine_s,
        "http_stream_e2e_s": http_s,
        "http_overhead_per_token_s": (http_s - engine_s) / tokens,
        "http_overhead_fraction": (http_s - engine_s) / engine_s,
    }


def prompt_ids(model_dir: Path, length: int) -> list[int]:
    """A fixed pseudo-random prompt of `length` tokens (BOS first)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    body = torch.randint(8, tokenizer.vocab_size, (length - 1,), generator=torch.Generator().manual_seed(0))
    return [tokenizer.bos_token_id, *body.tolist()]


def measure_setup(url: str, body: dict, rounds_single: int) -> dict[str, dict[str, float]]:
    """1 client (sequential) and 8 concurrent clients against one decode worker."""
    asyncio.run(load(url, {**body, "max_tokens": 2}, 1, 1))  # warm-up
    return {"1_client": phase(url, body, 1, rounds_single), "8_clients": phase(url, body, 8, 1)}


def colocated(model_dir: Path, common: list[str], body: dict, args: argparse.Namespace) -> dict:
    """A decode worker without a prefill peer: every prompt prefills locally; then the per-token
    HTTP overhead against the engine alone, measured while that worker is idle."""
    lm = load_model(str(model_dir), device="cpu", dtype="float32", progress=False)
    port = free_port()
    with worker("decode", [*common, "--port", str(port)], Path(args.logs) / "decode-colocated.log"):
        url = f"http://127.0.0.1:{port}"
        wait_ready(url)
        results = measure_setup(url, body, args.rounds)
        results["per_token"] = interleaved_overhead(url, lm, body, args.rounds)
    return results


def remote(model_dir: Path, common: list[str], body: dict, args: argparse.Namespace) -> dict:
    """A prefill worker and a decode worker joined over loopback gRPC: every prompt prefills remotely."""
    grpc_port, port = free_port(), free_port()
    prefill_args = ["--model", str(model_dir), "--host", "127.0.0.1", "--port", str(grpc_port)]
    prefill_args += ["--metrics-port", "0"]
    decode_args = [*common, "--port", str(port), "--prefill", f"127.0.0.1:{grpc_port}"]
    logs = Path(args.logs)
    with (
        worker("prefill", prefill_args, logs / "prefill.log"),
        worker("decode", decode_args, logs / "decode.log"),
    ):
        wait_ready(f"http://127.0.0.1:{port}")
        return measure_setup(f"http://127.0.0.1:{port}", body, args.rounds)


def run(args: argparse.Namespace) -> dict:
    """Measure both setups and the per-token overhead."""
    model_dir = Path(args.model) if args.model else demo_model_dir(args.preset)
    ids = prompt_ids(model_dir, args.prompt_tokens)
    body = {"model": "bench", "prompt": [ids], "max_tokens": args.output_tokens, "temperature": 0}
    body["stream"] = True
    Path(args.logs).mkdir(parents=True, exist_ok=True)
    common = ["--model", str(model_dir), "--served-model-name", "bench"]
    common += ["--max-concurrency", str(args.concurrency), "--remote-prefill-min-tokens", "1"]
    results: dict = {"model": str(model_dir), "prompt_tokens": len(ids), "output_tokens": args.output_tokens}
    results["colocated"] = colocated(model_dir, common, body, args)
    results["remote_prefill"] = remote(model_dir, common, body, args)
    results["per_token"] = results["colocated"].pop("per_token")
    return results


def main() -> int:
    """Command-line entry point; prints the results as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model folder; default: the demo model of --preset")
    parser.add_argument("--preset", default="bench", help="demo preset when --model is not given")
    parser.add_argument("--prompt-tokens", type=int, default=256)
    parser.add_argument("--output-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="sequential requests of the 1-client run")
    parser.add_argument("--concurrency", type=int, default=8, help="--max-concurrency of the decode workers")
    parser.add_argument("--logs", default=os.environ.get("TMPDIR", "/tmp") + "/http_bench_logs")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    results = run(args)
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
