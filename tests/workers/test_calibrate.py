"""`hybrid-inference calibrate`: a measured profile that `plan` and the node planner accept."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from hybrid_operator.planner import Request, device_profile, link_profile, make_plan, model_shape
from hybrid_operator.planner.nodes import NodeInfo, profile_node
from hybrid_workers.cli import main
from support.prefill import prefill_server as serving

pytestmark = pytest.mark.slow  # measures this machine for seconds, and a real prefill worker


@pytest.fixture(scope="module")
def prefill_server(tiny_lm) -> Iterator:  # -> RunningServer
    """A real prefill worker (gRPC, tiny model) on a free loopback port."""
    with serving(tiny_lm) as running:
        yield running


@pytest.fixture(scope="module")
def calibration(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The profile file of one calibrate run (float32 and float16, 2 repeats, 128-token layers) and its
    stderr."""
    out = tmp_path_factory.mktemp("calibrate") / "box.json"
    args = ["calibrate", "--out", str(out), "--device", "cpu", "--dtypes", "float32,float16", "--id", "box"]
    args += ["--shape", "demo-bench", "--budget-seconds", "0.05", "--repeats", "2", "--prefill-tokens", "128"]
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = main(args)
    assert code == 0
    return out, stderr.getvalue()


@pytest.fixture(scope="module")
def profile_file(calibration: tuple[Path, str]) -> Path:
    return calibration[0]


def test_calibrate_reports_progress_and_the_spread_of_its_repeats(calibration: tuple[Path, str]) -> None:
    path, stderr = calibration
    data = json.loads(path.read_text())
    assert data["repeats"] == 2
    assert set(data["spread"]) >= {"matmul float32", "prefill layers float16", "decode layers float32"}
    assert all(value >= 0 for value in data["spread"].values())
    # One progress line per measurement, counted, with both repeats' values.
    lines = [line for line in stderr.splitlines() if line.startswith("calibrate [")]
    assert len(lines) == 6 * 2 + 3 and lines[-1].startswith("calibrate [15/15] step overhead")
    assert "largest spread over 2 repeats" in stderr


def test_the_default_dtype_of_plan_is_measured(calibration: tuple[Path, str]) -> None:
    box = device_profile(str(calibration[0]))
    plan = make_plan(model_shape("demo-tiny"), [box], link_profile("loopback"), Request(64, 8))  # float16
    assert plan.best.decode_tokens_per_second > 0


def test_the_profile_holds_positive_measured_rates(profile_file: Path) -> None:
    data = json.loads(profile_file.read_text())
    assert data["measured"] is True and data["id"] == "box"
    # Measured on a machine that may be busy: only signs and the profile's own relations, no speed bound.
    assert data["sustained_tflops"]["float32"] > 0 and data["decode_gbps"]["float32"] > 0
    assert data["memory_gbps"] >= data["sustained_memory_gbps"]
    assert data["layer_overhead_seconds"] >= 0 and data["step_overhead_seconds"] >= 0
    assert data.get("kv_gbps", 1.0) > 0  # absent only when a longer cache measured no slower
    assert "calibrate" in data["source"]


def test_plan_uses_the_measured_profile(profile_file: Path) -> None:
    box = device_profile(str(profile_file))
    plan = make_plan(model_shape("demo-bench"), [box], link_profile("loopback"), Request(64, 8, "float32"))
    assert plan.best.prefill == "box"
    # a decode step of the bench model reads ~0.67 GB of weights at the measured GEMV rate, 64 to 71
    # cached tokens (24 KiB each) at the measured KV rate, plus the per-layer and per-step overheads
    assert box.step_overhead_seconds == json.loads(profile_file.read_text())["step_overhead_seconds"]
    kv = 67.5 * 24576 / box.kv_bytes_per_second("float32")
    step = 672_239_616 / (box.decode_gbps["float32"] * 1e9) + kv + 12 * box.layer_overhead_seconds
    step += box.step_overhead_seconds
    assert plan.best.decode_tokens_per_second == pytest.approx(1 / step, rel=0.05)


def test_the_profile_works_as_a_node_annotation(profile_file: Path) -> None:
    node = NodeInfo("box-node", annotations={"hybridinference.dev/profile": profile_file.read_text()})
    assert profile_node(node).device == device_profile(str(profile_file))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--dtypes", "float32,fp4"], "--dtypes float32,fp4: unknown dtype 'fp4'"),
        (["--budget-seconds", "0"], "--budget-seconds 0.0: must be > 0"),
        (["--out", "/no/such/dir/p.json"], "--out /no/such/dir/p.json: folder '/no/such/dir' does not exist"),
        (["--device", "tpu"], "--device: 'tpu' is not a choice; use one of auto, cpu, cuda, mps"),
        (["--shape", "gpt-9"], "--shape gpt-9: unknown model"),
        (["--prefill-tokens", "0"], "--prefill-tokens 0: must be >= 1"),
    ],
)
def test_bad_flags_exit_2_naming_the_value(
    capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    assert main(["calibrate", "--budget-seconds", "0.01", *extra]) == 2
    assert message in capsys.readouterr().err


def test_peer_measures_the_link_to_a_real_prefill_worker(
    prefill_server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "link.json"
    peer = f"127.0.0.1:{prefill_server.port}"
    assert (
        main(["calibrate", "--peer", peer, "--link-only", "--link-out", str(out), "--peer-tokens", "400"])
        == 0
    )
    link = link_profile(str(out))
    assert link.gbps > 0 and link.latency_seconds > 0  # measured, on a possibly busy box: no bound
    assert "bulk prefill" in link.source
    shape, box = model_shape("demo-tiny"), device_profile("generic-cpu")
    plan = make_plan(shape, [box, device_profile("m3-ultra")], link, Request(400, 4, "float32"))
    assert plan.link.id == f"link-to-{peer}"


def test_an_unreachable_peer_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calibrate", "--peer", "127.0.0.1:1", "--link-only"]) == 2
    assert "--peer 127.0.0.1:1: prefill worker not reachable" in capsys.readouterr().err


def test_the_rates_come_from_the_given_shapes_decoder_layers(profile_file: Path) -> None:
    data = json.loads(profile_file.read_text())
    assert (
        "prefill (128 tokens) and decode (128 and 512 cached) through demo-bench's decoder layers"
        in data["source"]
    )
    assert data["peak_tflops"]["float32"] >= data["sustained_tflops"]["float32"]
    layers = data["decoder_layers"]
    assert layers["shape"] == "demo-bench" and layers["prefill_tokens"] == layers["decode_context"] == 128
    # demo-bench's 45 MB float32 layers: 6 of them stream the 256 MiB a CPU pass reads (calibration.SIZES);
    # float16 (22.5 MB layers) streams 64 MiB on CPUs (converted element by element: kept short)
    assert layers["stack_layers"] == {"float32": 6, "float16": 3}
    assert layers["long_decode_context"] == 512
    for dtype in ("float32", "float16"):
        assert layers["prefill_seconds"][dtype] > 0 and layers["decode_seconds"][dtype] > 0
        assert layers["long_decode_seconds"][dtype] > 0


def test_plan_charges_attention_at_the_measured_rate(profile_file: Path) -> None:
    data = json.loads(profile_file.read_text())
    box = device_profile(str(profile_file))
    assert box.attention_flops_per_second("float32") == pytest.approx(
        data["attention_tflops"]["float32"] * 1e12
    )


def test_a_layer_stack_is_the_shapes_decoder_layers_with_sdpa() -> None:
    import torch
    from hybrid_workers.layer_calibration import layer_stack

    shape = model_shape("demo-bench")
    stack = layer_stack(shape, torch.float32, torch.device("cpu"))
    attention = stack.layers[0].self_attn
    assert stack.config._attn_implementation == "sdpa" and len(stack.layers) == 6
    assert (attention.q_proj.out_features, attention.k_proj.out_features) == (1024, 256)
    assert stack.layers[0].mlp.gate_proj.out_features == shape.intermediate
    layer_stack.cache_clear()


def test_the_step_overhead_is_timed_through_the_engines_decode_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """The step overhead runs the workers' own decode loop (its sampling included) on a model of the
    shape's width with no decoder layers, and counts it once: never negative."""
    import importlib

    import torch
    from hybrid_workers import layer_calibration

    decode_module = importlib.import_module("hybrid_workers.engine.decode")  # the package exports `decode()`

    sampled: list[int] = []
    real_sample = decode_module.sample

    def counting(logits: torch.Tensor, params: object, step: int) -> tuple[int, float]:
        sampled.append(logits.shape[-1])
        return real_sample(logits, params, step)  # type: ignore[arg-type]

    monkeypatch.setattr(decode_module, "sample", counting)
    seconds = layer_calibration.step_overhead_seconds(torch.device("cpu"), 0.02, model_shape("demo-bench"))
    assert seconds >= 0
    assert len(sampled) >= 10 and set(sampled) == {16}  # min_calls steps, each sampling 16 logits


def test_the_summary_says_why_a_profile_has_no_kv_rate(profile_file: Path) -> None:
    from hybrid_workers.cli.calibrate import _summary

    profile = json.loads(profile_file.read_text())
    profile.pop("kv_gbps", None)  # the longer cache measured no slower: calibrate leaves it out
    line = _summary(profile)
    assert "nan" not in line
    assert "KV not separated" in line
    profile["kv_gbps"] = 6.4
    assert "KV 6.4 GB/s" in _summary(profile)
    profile["step_overhead_seconds"] = 0.000123
    assert "123 us/step" in _summary(profile)
