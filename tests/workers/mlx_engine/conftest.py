"""Fixtures of the MLX engine tests: the demo models loaded into MLX, and a tiny model with rope theta 1e5."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mlx.core", reason="the MLX engine needs the [mlx] extra (mlx, mlx-lm)")

THETA = 1e5  # not mlx-lm's default (1e4): a config translated wrongly decodes differently


def write_theta_model(source: Path, target: Path, theta: float = THETA) -> Path:
    """A copy of the model folder `source` whose config.json sets rope_parameters.rope_theta = theta."""
    shutil.copytree(source, target)
    config_path = target / "config.json"
    config = json.loads(config_path.read_text())
    config["rope_parameters"] = {**config.get("rope_parameters", {}), "rope_theta": theta}
    config_path.write_text(json.dumps(config, indent=2))
    return target


@pytest.fixture(scope="session")
def theta_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny demo model with rope theta 1e5 (as transformers 5 writes it: inside rope_parameters)."""
    return write_theta_model(tiny_model_dir, tmp_path_factory.mktemp("theta") / "tiny-theta")


@pytest.fixture(scope="session")
def tiny_mlx_bf16(tiny_model_dir: Path) -> Any:
    """The tiny demo model in MLX, bfloat16."""
    from hybrid_workers.mlx_engine.loading import load_mlx_model

    return load_mlx_model(str(tiny_model_dir), dtype="bfloat16")


@pytest.fixture(scope="session")
def theta_lm(theta_model_dir: Path) -> Any:
    """The rope-theta-1e5 tiny model on the torch engine, float32."""
    from hybrid_workers.engine import load_model

    return load_model(str(theta_model_dir), device="cpu", dtype="float32", progress=False)


@pytest.fixture(scope="session")
def theta_mlx(theta_model_dir: Path) -> Any:
    """The rope-theta-1e5 tiny model on the MLX engine, float32."""
    from hybrid_workers.mlx_engine.loading import load_mlx_model

    return load_mlx_model(str(theta_model_dir), dtype="float32")


@pytest.fixture(scope="session")
def trained_mlx(trained_model_dir: Path) -> Any:
    """SmolLM2-135M-Instruct (rope theta 1e5, tied embeddings) on the MLX engine, float32."""
    from hybrid_workers.mlx_engine.loading import load_mlx_model

    return load_mlx_model(str(trained_model_dir), dtype="float32")
