"""`--engine torch|mlx|auto`: which engine runs, one-line errors, and nothing imports MLX unless asked."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hybrid_workers.cli import build_parser
from hybrid_workers.decode import engines
from hybrid_workers.enums import ComputeDevice, Engine
from hybrid_workers.errors import UserError


def test_auto_is_mlx_only_on_apple_silicon_with_mlx_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    for mac, installed, expected in [
        (True, True, Engine.MLX),
        (True, False, Engine.TORCH),
        (False, True, Engine.TORCH),
    ]:
        monkeypatch.setattr(engines, "apple_silicon", lambda mac=mac: mac)
        monkeypatch.setattr(engines, "mlx_installed", lambda installed=installed: installed)
        assert engines.resolve_engine("auto") is expected
    assert engines.resolve_engine("torch") is Engine.TORCH


def test_mlx_without_the_extra_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engines, "mlx_installed", lambda: False)
    with pytest.raises(UserError, match=r"--engine mlx: mlx and mlx-lm are not installed; pip install"):
        engines.resolve_engine("mlx")
    with pytest.raises(UserError, match="--engine tensorrt: unknown engine; use one of auto, torch, mlx"):
        engines.resolve_engine("tensorrt")


def test_decode_and_serve_take_the_flag_and_its_env_mirror(monkeypatch: pytest.MonkeyPatch) -> None:
    assert build_parser().parse_args(["decode", "--engine", "mlx"]).engine is Engine.MLX
    assert build_parser().parse_args(["serve", "--engine", "torch"]).engine == "torch"
    monkeypatch.setenv("HYBRID_INFERENCE_ENGINE", "mlx")
    assert build_parser().parse_args(["decode"]).engine == "mlx"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["decode", "--engine", "jax"])


def test_the_engines_report_their_compute_device(tiny_lm, tiny_mlx) -> None:
    assert engines.compute_device(tiny_lm) is ComputeDevice.CPU
    assert engines.compute_device(tiny_mlx) is ComputeDevice.CPU  # the CPU build; Metal on a Mac
    assert engines.engine_of(tiny_mlx) is Engine.MLX and engines.engine_of(tiny_lm) is Engine.TORCH


def test_the_mlx_engine_refuses_a_cuda_device() -> None:
    pytest.importorskip("mlx.core")
    with pytest.raises(UserError, match="--device cuda: the MLX engine computes on Metal"):
        engines.load_decode_model(Engine.MLX, None, device="cuda", dtype="float32")


def test_the_torch_decode_worker_never_imports_mlx(tiny_lm) -> None:
    code = (
        "import sys; from hybrid_workers.cli import build_parser; from hybrid_workers.decode import worker, "
        "engines; build_parser().parse_args(['decode']); assert engines.resolve_engine('torch'); "
        "assert not [m for m in sys.modules if m.startswith(('mlx', 'mlx_lm'))], 'mlx imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
