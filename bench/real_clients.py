"""Real clients against `serve`: lm-eval's local-completions and guidellm, each from its own venv.

Run: `python bench/real_clients.py [--model DIR] [--clients-dir DIR] [--out results.json]`.
Both tools pin their own transformers/torch ranges, so each gets a virtual environment of its own
under --clients-dir (built once: `lm-eval[api]==0.4.13` + transformers on the local torch 2.13.0
wheel, and `guidellm==0.8.1`); everything runs offline against `hybrid-inference serve` on loopback:

- lm-eval: a local JSONL multiple-choice task (loglikelihood requests: echo + logprobs), with
  tokenized_requests True and False, batch_size 1 and 4 (4 sends `prompt` arrays). Every
  loglikelihood lm-eval logs is compared with transformers' own float32 forward over the same tokens
  (lm-eval's encoding of context + continuation); the largest difference is reported.
- guidellm: synthetic prompts (tokenizer = the model folder), fixed output length (guidellm sends
  `ignore_eos` and `stream_options.continuous_usage_stats`), a synchronous and a concurrent profile;
  the count of successful / failed requests and of output tokens per request are reported.
Prints JSON. Slow (venvs, subprocesses): a bench script, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CLIENTS = {
    # torch first (the local CPU wheel, not a CUDA build); transformers for tokenizer_backend=huggingface
    "lmeval": ["torch==2.13.0", "lm-eval[api]==0.4.13", "transformers"],
    "guidellm": ["guidellm==0.8.1"],
}
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
NAME = "real-clients"
DOCS = [
    {"context": "The capital of France is", "choices": ["Paris", "Rome", "Berlin"]},
    {"context": "One, two, three,", "choices": ["four", "seven", "ten"]},
    {"context": "Prefill reads the whole prompt and is limited by", "choices": ["arithmetic", "bandwidth"]},
    {"context": "A quick brown fox jumps over the lazy", "choices": ["dog", "cat", "caf\u00e9 \u2019x"]},
    {"context": "Hello, world! How are you", "choices": ["today?", "tomorrow?"]},
    {"context": "The key and value tensors of a layer are final", "choices": ["once it ran", "never"]},
]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_venv(root: Path, name: str) -> Path:
    """The venv of one client tool, built once (a stamp file marks it complete)."""
    venv = root / name
    stamp = venv / ".installed"
    if not stamp.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        for package in CLIENTS[name]:
            subprocess.run([str(venv / "bin" / "pip"), "install", "-q", package], check=True)
        stamp.touch()
    return venv / "bin"


@contextmanager
def serve(model: str, port: int, log: Path) -> Iterator[None]:
    """`hybrid-inference serve` on `port` until the block ends (SIGINT, then kill)."""
    argv = [sys.executable, "-m", "hybrid_workers", "serve", "--model", model, "--device", "cpu"]
    argv += ["--port", str(port), "--served-model-name", NAME, "--dtype", "float32"]
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 600
            while not _ready(port):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"serve did not become ready; see {log}")
                time.sleep(0.5)
            yield
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as reply:  # loopback
            return bool(reply.status == 200)
    except OSError:
        return False


def write_task(folder: Path) -> None:
    """A local multiple-choice task (lm-eval YAML + JSONL): loglikelihood requests only."""
    data = folder / "docs.jsonl"
    data.write_text("".join(json.dumps({"answer": 0, **doc}) + "\n" for doc in DOCS))
    (folder / "hi_loglik.yaml").write_text(
        "task: hi_loglik\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\noutput_type: multiple_choice\n"
        'doc_to_text: "{{context}}"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: "{{answer}}"\n'
        "metric_list:\n  - metric: acc\n"
    )


def run_lmeval(bin_dir: Path, port: int, model: str, task: Path, tokenized: bool, batch: int) -> list[Any]:
    """lm-eval once; its logged (context, continuation, loglikelihood) triples."""
    out = task / f"out-{tokenized}-{batch}"
    model_args = (
        f"model={NAME},base_url=http://127.0.0.1:{port}/v1/completions,tokenizer={model},"
        f"tokenizer_backend=huggingface,tokenized_requests={tokenized},max_retries=1,"
        f"add_bos_token={_adds_bos(model)}"
    )
    argv = [str(bin_dir / "lm_eval"), "--model", "local-completions", "--model_args", model_args]
    argv += ["--tasks", "hi_loglik", "--include_path", str(task), "--batch_size", str(batch)]
    argv += ["--log_samples", "--output_path", str(out)]
    subprocess.run(argv, check=True, env={**os.environ, **OFFLINE}, capture_output=True)
    triples = []
    for path in out.rglob("samples_hi_loglik_*.jsonl"):
        for line in path.read_text().splitlines():
            sample = json.loads(line)
            arguments = sample["arguments"]  # {"gen_args_i": {"arg_0": context, "arg_1": continuation}}
            pairs = arguments.values() if isinstance(arguments, dict) else arguments
            for pair, response in zip(pairs, sample["resps"], strict=True):
                context, continuation = (pair["arg_0"], pair["arg_1"]) if isinstance(pair, dict) else pair
                triples.append((context, continuation, float(response[0][0])))
    return triples


def _adds_bos(model: str) -> bool:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    return tokenizer.bos_token_id is not None and tokenizer("x")["input_ids"][0] == tokenizer.bos_token_id


def reference(model: str, triples: list[Any]) -> list[float]:
    """transformers' float32 loglikelihoods of the same continuations, tokenised as lm-eval does."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    lm = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
    special = _adds_bos(model)
    values = []
    for context, continuation, _ in triples:
        spaces = len(context) - len(context.rstrip())  # lm-eval moves trailing spaces to the continuation
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        whole = tokenizer(context + continuation, add_special_tokens=special)["input_ids"]
        ctx = tokenizer(context, add_special_tokens=special)["input_ids"]
        with torch.no_grad():
            logits = lm(torch.tensor([whole])).logits[0].float()  # [seq, vocab]
        logprobs = torch.log_softmax(logits[:-1], -1)
        targets = torch.tensor(whole[len(ctx) :])
        values.append(float(logprobs[len(ctx) - 1 :].gather(1, targets[:, None]).sum()))
    return values


def run_guidellm(bin_dir: Path, port: int, model: str, folder: Path, profile: str) -> dict[str, Any]:
    """One guidellm benchmark (8 requests, 32 prompt tokens, 16 output tokens); its counts."""
    out = folder / f"guidellm-{profile.split(',')[0].split('=')[1]}.json"
    argv = [str(bin_dir / "guidellm"), "run", "--disable-console-interactive"]
    argv += ["--backend", f"kind=openai_http,target=http://127.0.0.1:{port},model={NAME}"]
    argv += ["--profile", profile, "--constraint", "kind=max_requests,count=8"]
    argv += ["--data", "kind=synthetic_text,prompt_tokens=32,output_tokens=16"]
    argv += ["--tokenizer", f"kind=huggingface_auto,model={model}", "--output", f"kind=json,path={out}"]
    done = subprocess.run(argv, env={**os.environ, **OFFLINE}, capture_output=True, text=True)
    if done.returncode != 0:
        return {"profile": profile, "error": done.stderr[-2000:]}
    return {"profile": profile, **summarise_guidellm(json.loads(out.read_text()))}


def summarise_guidellm(report: dict[str, Any]) -> dict[str, Any]:
    """Successful/errored request counts and output tokens per successful request."""
    counts: dict[str, int] = {}
    outputs: list[int] = []
    for benchmark in report.get("benchmarks", []):
        for status, requests in benchmark.get("requests", {}).items():
            if isinstance(requests, list):
                counts[status] = counts.get(status, 0) + len(requests)
                if status == "successful":
                    outputs += [_output_tokens(r) for r in requests]
    return {"requests": counts, "output_tokens": sorted(set(outputs))}


def _output_tokens(request: dict[str, Any]) -> int:
    for key in ("output_tokens", "output_tokens_count"):
        if isinstance(request.get(key), int):
            return int(request[key])
    metrics = request.get("output_metrics") or request.get("metrics") or {}
    return int(metrics.get("text_tokens") or metrics.get("output_tokens") or -1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="model folder (default: the tiny demo model)")
    parser.add_argument("--clients-dir", default=str(Path.home() / ".cache/hybrid-inference/real-clients"))
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    if args.model is None:
        from hybrid_workers.engine.demo_model import demo_model_dir

        args.model = str(demo_model_dir("tiny"))
    root = Path(args.clients_dir)
    lmeval, guidellm = ensure_venv(root, "lmeval"), ensure_venv(root, "guidellm")
    port = free_port()
    results: dict[str, Any] = {"model": args.model, "lm_eval": [], "guidellm": []}
    with tempfile.TemporaryDirectory() as tmp, serve(args.model, port, Path(tmp) / "serve.log"):
        task = Path(tmp)
        write_task(task)
        for tokenized in (True, False):
            for batch in (1, 4):
                triples = run_lmeval(lmeval, port, args.model, task, tokenized, batch)
                expected = reference(args.model, triples)
                worst = max((abs(t[2] - e) for t, e in zip(triples, expected, strict=True)), default=None)
                results["lm_eval"].append(
                    {
                        "tokenized_requests": tokenized,
                        "batch_size": batch,
                        "loglikelihoods": len(triples),
                        "max_abs_diff_vs_transformers": worst,
                    }
                )
        for profile in ("kind=synchronous", "kind=concurrent,streams=4"):
            results["guidellm"].append(run_guidellm(guidellm, port, args.model, task, profile))
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
