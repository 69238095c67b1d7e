"""`hybrid-inference generate` and `demo-model`: the completion on stdout, timing on stderr, clear errors."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hybrid_workers.cli import main
from hybrid_workers.engine import SamplingParams, encode_prompt, stream_completion

PROMPT = "What is the capital of France?"


def _generate(model_dir: Path, *flags: str) -> list[str]:
    return ["generate", "--prompt", PROMPT, "--model", str(model_dir), "--device", "cpu", *flags]


def test_generate_prints_the_engines_greedy_completion_then_timing(tiny_lm, tiny_model_dir, capsys):
    assert main(_generate(tiny_model_dir, "--max-tokens", "12", "--temperature", "0")) == 0
    out, err = capsys.readouterr()
    params = SamplingParams(max_tokens=12, temperature=0)
    expected = "".join(s.text for s in stream_completion(tiny_lm, encode_prompt(tiny_lm, PROMPT), params))
    assert out == expected + "\n"
    assert "completion 12 tokens (finish: length)" in err
    assert "TTFT" in err
    assert "tokens/s" in err


def test_generate_with_a_seed_repeats_and_a_stop_string_cuts(tiny_model_dir, capsys):
    flags = ("--max-tokens", "20", "--seed", "9", "--temperature", "0.8")
    main(_generate(tiny_model_dir, *flags))
    first = capsys.readouterr().out
    main(_generate(tiny_model_dir, *flags))
    assert capsys.readouterr().out == first
    stop = first[5:8]
    main(_generate(tiny_model_dir, *flags, "--stop", stop))
    out, err = capsys.readouterr()
    assert out == first[: first.index(stop)] + "\n"
    assert "finish: stop" in err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--max-tokens", "-1"), "max_tokens -1: must be >= 0"),
        (("--temperature", "-1"), "temperature -1.0: must be >= 0"),
        (("--top-p", "0"), r"top_p 0.0: must be in \(0, 1\]"),
        (("--max-tokens", "600"), "exceed the model's context of 512"),
        (("--dtype", "float16", "--device", "cuda"), "--device cuda"),
    ],
)
def test_bad_input_exits_2_with_a_one_line_error(tiny_model_dir, capsys, flags, message):
    if "cuda" in flags and torch.cuda.is_available():
        pytest.skip("cuda is available here")
    assert main(_generate(tiny_model_dir, *flags)) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("hybrid-inference generate: error: ")
    assert re.search(message, err)


def test_an_empty_prompt_is_refused(tiny_model_dir, capsys):
    assert main(["generate", "--prompt", "", "--model", str(tiny_model_dir)]) == 2
    assert "--prompt '': empty" in capsys.readouterr().err


def test_demo_model_command_writes_a_loadable_model(tmp_path, capsys):
    assert main(["demo-model", str(tmp_path / "m"), "--preset", "tiny"]) == 0
    assert "4 layers" in capsys.readouterr().out
    assert (tmp_path / "m" / "config.json").is_file()
    assert (tmp_path / "m" / "tokenizer.json").is_file()


@pytest.mark.slow
def test_console_script_loads_a_hugging_face_id_from_the_local_cache(tiny_model_dir, tmp_path):
    """`--model org/name` resolves through the HF cache layout (refs/main -> snapshots/<commit>)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--hybrid-tests--tiny"
    shutil.copytree(tiny_model_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "hybrid_workers", "generate", "--prompt", PROMPT, "--max-tokens", "5"]
    command += ["--temperature", "0", "--model", "hybrid-tests/tiny", "--device", "cpu"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "[hybrid-tests/tiny on cpu, float32]" in done.stderr
    assert "completion 5 tokens" in done.stderr


def test_negative_threads_are_refused(tiny_model_dir, capsys):
    assert main(_generate(tiny_model_dir, "--threads", "-2")) == 2
    assert "--threads -2: must be >= 0" in capsys.readouterr().err
