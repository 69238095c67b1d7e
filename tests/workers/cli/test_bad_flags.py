"""Bad values on the command line are refused in one line naming the value and what to use instead,
before any worker starts or any model loads."""

from __future__ import annotations

from pathlib import Path

import pytest
from hybrid_workers.cli import bench, main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["serve", "--dtype", "float99"],
            "'float99' is not a choice; use one of auto, float32, bfloat16, float16",
        ),
        (["decode", "--device", "tpu"], "'tpu' is not a choice; use one of auto, cpu, cuda, mps"),
        (["decode", "--fallback", "retry"], "'retry' is not a choice; use one of local, fail"),
        (["serve", "--kv-compression", "zstd"], "'zstd' is not a choice; use one of none, fp8, int8"),
        (["prefill", "--mode", "stream"], "'stream' is not a choice; use one of layerwise, bulk"),
        (["serve", "--engine", "jax"], "'jax' is not a choice; use one of auto, torch, mlx"),
        (["serve", "--ready-timeout", "-5"], "--ready-timeout: -5: must be more than 0 seconds"),
        (["serve", "--stop-timeout", "0"], "--stop-timeout: 0: must be more than 0 seconds"),
        (["serve", "--max-concurrency", "0"], "--max-concurrency: 0 must be at least 1"),
        (["serve", "--max-queue", "-1"], "--max-queue: -1 must be at least 0"),
    ],
)
def test_bad_values_are_refused_naming_the_choices(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_serve_still_takes_auto_concurrency() -> None:
    from hybrid_workers.cli import build_parser

    assert build_parser().parse_args(["serve", "--max-concurrency", "auto"]).max_concurrency == "auto"


def test_demo_model_onto_a_file_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    taken = tmp_path / "weights.bin"
    taken.write_text("not a folder")
    assert main(["demo-model", str(taken)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{taken}: exists and is not a folder" in err


def test_bench_passes_the_arguments_after_the_name_to_its_script(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "echo_bench.py").write_text("import sys; print('args:', sys.argv[1:])\n")
    monkeypatch.setattr(bench, "BENCH_DIR", tmp_path)
    assert main(["bench", "echo", "--repeats", "1", "--out", "x.json"]) == 0
    assert "args: ['--repeats', '1', '--out', 'x.json']" in capfd.readouterr().out
    assert main(["bench", "nope"]) == 2
    assert "bench nope: unknown benchmark; choose from echo" in capfd.readouterr().err
