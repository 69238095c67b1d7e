"""`hybrid-inference plan`: the --json contract, the table and verdict, the plot, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hybrid_workers.cli import main

EXO_ARGS = [
    "plan",
    "--model",
    "llama-3.1-8b",
    "--prefill-device",
    "dgx-spark",
    "--decode-device",
    "m3-ultra",
    "--link",
    "10gbe",
    "--prompt-tokens",
    "8192",
    "--output-tokens",
    "32",
]
PLACEMENT_KEYS = {"prefill", "decode", "mode", "ttft_seconds", "decode_tokens_per_second", "total_seconds"}


def _json(capsys: pytest.CaptureFixture[str], args: list[str]) -> dict:
    assert main(args) == 0
    return json.loads(capsys.readouterr().out)


def test_json_lists_every_placement_and_the_best(capsys: pytest.CaptureFixture[str]) -> None:
    document = _json(capsys, [*EXO_ARGS, "--json"])
    placements = document["placements"]
    assert {(p["prefill"], p["decode"], p["mode"]) for p in placements} == {
        ("dgx-spark", "dgx-spark", "single"),
        ("m3-ultra", "m3-ultra", "single"),
        ("dgx-spark", "m3-ultra", "bulk"),
        ("dgx-spark", "m3-ultra", "layerwise"),
        ("m3-ultra", "dgx-spark", "bulk"),
        ("m3-ultra", "dgx-spark", "layerwise"),
    }
    for placement in placements:
        assert set(placement) >= PLACEMENT_KEYS
        assert placement["total_seconds"] == pytest.approx(
            placement["ttft_seconds"] + 32 / placement["decode_tokens_per_second"]
        )
    best = document["best"]
    assert (best["prefill"], best["decode"], best["mode"]) == ("dgx-spark", "m3-ultra", "layerwise")
    assert best["total_seconds"] == min(p["total_seconds"] for p in placements)
    assert best["speedup_vs_best_single_node"] == pytest.approx(
        min(p["total_seconds"] for p in placements if p["mode"] == "single") / best["total_seconds"]
    )
    assert isinstance(best["remote_prefill_min_tokens"], int)


def test_table_ends_with_a_one_sentence_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(EXO_ARGS) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("Prefill on dgx-spark, decode on m3-ultra with layerwise KV streaming")
    assert lines[-1].count(". ") == 0 and lines[-1].endswith(".")
    assert any(line.endswith("<- best") and "layerwise" in line for line in lines)
    assert any("remotePrefillMinTokens" in line for line in lines)


def test_compression_halves_the_fp16_kv_on_the_wire(capsys: pytest.CaptureFixture[str]) -> None:
    plain = _json(capsys, [*EXO_ARGS, "--json"])["best"]["kv_transfer_bytes"]
    packed = _json(capsys, [*EXO_ARGS, "--json", "--kv-compression", "fp8"])["best"]["kv_transfer_bytes"]
    assert plain == 1 << 30 and packed < plain / 1.99


def test_a_config_json_path_and_a_calibrated_profile_file_work(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = {
        "num_hidden_layers": 2,
        "hidden_size": 64,
        "num_attention_heads": 4,
        "intermediate_size": 128,
        "vocab_size": 100,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    box = {"id": "box", "memory_gb": 8, "memory_gbps": 20, "peak_tflops": {"float32": 0.2}, "measured": True}
    (tmp_path / "box.json").write_text(json.dumps(box))
    document = _json(
        capsys,
        [
            "plan",
            "--model",
            str(tmp_path),
            "--prefill-device",
            str(tmp_path / "box.json"),
            "--decode-device",
            str(tmp_path / "box.json"),
            "--link",
            "loopback",
            "--dtype",
            "float32",
            "--prompt-tokens",
            "64",
            "--output-tokens",
            "8",
            "--json",
        ],
    )
    assert [(p["prefill"], p["mode"]) for p in document["placements"]] == [("box", "single")]


def test_plot_writes_a_png(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "timeline.png"
    assert main([*EXO_ARGS, "--plot", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--dtype", "fp16"], "--dtype: 'fp16' is not a choice; use one of float32, bfloat16, float16"),
        (
            ["--kv-compression", "zstd"],
            "--kv-compression: 'zstd' is not a choice; use one of none, fp8, int8",
        ),
        (["--prompt-tokens", "-5"], "--prompt-tokens -5: must be >= 0"),
        (["--link", "carrier-pigeon"], "unknown link 'carrier-pigeon'; use a measured link file or one of"),
        (["--decode-device", "m9-ultra"], "unknown device 'm9-ultra'"),
        (["--model", "gpt-7"], "unknown model 'gpt-7'"),
        (["--plot", "out.svg"], "--plot out.svg: the timeline is written as PNG"),
        (
            ["--decode-engine", "ollama"],
            "--decode-engine: 'ollama' is not a choice; use one of auto, torch, mlx, llama.cpp, vllm, "
            "sglang, tensorrt-llm",
        ),
        (
            ["--decode-engine", "vllm"],
            "--decode-device m3-ultra --decode-engine vllm: engine vllm has no profile for metal (apple "
            "devices); engines there: llama.cpp, mlx",
        ),
    ],
)
def test_bad_flags_exit_2_naming_the_value(
    capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    assert main([*EXO_ARGS, *extra]) == 2
    assert message in capsys.readouterr().err


def test_missing_devices_are_named(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HYBRID_INFERENCE_PLAN_PREFILL_DEVICE", raising=False)
    assert main(["plan", "--model", "llama-3.1-8b", "--decode-device", "m3-ultra"]) == 2
    assert "--prefill-device is required" in capsys.readouterr().err


@pytest.mark.slow
def test_plan_runs_without_importing_torch() -> None:
    code = (
        "import sys; from hybrid_workers.cli import main; "
        f"rc = main({[*EXO_ARGS, '--json']!r}); "
        "assert rc == 0 and 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)[:3]"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_list_names_every_builtin_profile(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--list"]) == 0
    out = capsys.readouterr().out
    for name in (
        "dgx-spark",
        "m3-ultra",
        "h200",
        "generic-cpu",
        "10gbe",
        "thunderbolt-5",
        "llama-3.1-8b",
        "demo-bench",
        "llama.cpp/metal",
        "tensorrt-llm/cuda",
    ):
        assert name in out


def test_the_workers_environment_does_not_leak_into_plan(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # `serve` reads HYBRID_INFERENCE_DTYPE=auto and HYBRID_INFERENCE_MODEL=<folder>; plan must not.
    monkeypatch.setenv("HYBRID_INFERENCE_DTYPE", "auto")
    monkeypatch.setenv("HYBRID_INFERENCE_MODEL", "/models/served")
    assert main([*EXO_ARGS, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["dtype"] == "float16"
    monkeypatch.setenv("HYBRID_INFERENCE_PLAN_DTYPE", "bfloat16")
    assert main([*EXO_ARGS, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["dtype"] == "bfloat16"


def test_quantised_weights_are_planned(capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "plan",
        "--model",
        "llama-3.1-70b",
        "--prefill-device",
        "dgx-spark",
        "--decode-device",
        "dgx-spark",
    ]
    assert main([*args, "--json"]) == 2
    assert "fits on none" in capsys.readouterr().err
    assert main([*args, "--weights", "fp8", "--json"]) == 0
    assert main([*args, "--weights", "q3_z"]) == 2
    assert "unknown weight format 'q3_z'" in capsys.readouterr().err


def test_each_device_runs_its_engine_shown_in_the_table_and_the_json(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    auto = _json(capsys, [*EXO_ARGS, "--json"])["best"]
    assert (auto["prefill_engine"], auto["decode_engine"]) == ("torch/cuda", "mlx/metal")
    mps = _json(capsys, [*EXO_ARGS, "--decode-engine", "torch", "--json"])["best"]
    assert mps["decode_engine"] == "torch/mps"
    # torch's MPS backend streams a third less of the Mac's bandwidth than MLX (engines.yaml).
    assert mps["decode_tokens_per_second"] < 0.6 * auto["decode_tokens_per_second"]
    monkeypatch.setenv("HYBRID_INFERENCE_PLAN_PREFILL_ENGINE", "tensorrt-llm")
    assert main(EXO_ARGS) == 0
    assert "engines: dgx-spark tensorrt-llm/cuda, m3-ultra mlx/metal" in capsys.readouterr().out


def test_one_device_with_two_engines_is_listed_once_per_engine(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["plan", "--model", "llama-3.1-8b", "--prefill-device", "h100", "--decode-device", "h100"]
    document = _json(capsys, [*args, "--prefill-engine", "vllm", "--decode-engine", "llama.cpp", "--json"])
    assert {(p["prefill"], p["decode"], p["mode"]) for p in document["placements"]} >= {
        ("h100/vllm", "h100/vllm", "single"),
        ("h100/vllm", "h100/llama.cpp", "layerwise"),
    }
