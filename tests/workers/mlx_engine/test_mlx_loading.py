"""Loading a model folder into MLX: no torch weights, the torch engine's identity, one-line refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from hybrid_workers.errors import UserError
from hybrid_workers.mlx_engine.loading import load_mlx_model


def test_the_fingerprint_equals_the_torch_engines(
    tiny_lm: Any, tiny_lm_bf16: Any, tiny_mlx: Any, tiny_mlx_bf16: Any
) -> None:
    """The handshake compares model identity (the folder's files) and dtype: the two engines must agree."""
    assert (
        tiny_mlx.fingerprint == tiny_lm.fingerprint == tiny_mlx_bf16.fingerprint == tiny_lm_bf16.fingerprint
    )
    assert (tiny_mlx.dtype, tiny_mlx_bf16.dtype) == (tiny_lm.dtype, tiny_lm_bf16.dtype)


def test_the_facts_equal_the_torch_engines(tiny_lm: Any, tiny_mlx: Any) -> None:
    for fact in (
        "num_layers",
        "num_kv_heads",
        "head_dim",
        "max_context",
        "eos_token_ids",
        "vocab_size",
        "dtype",
    ):
        assert getattr(tiny_mlx, fact) == getattr(tiny_lm, fact), fact


def test_loading_never_builds_a_torch_model(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers

    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("a torch copy of the weights was built")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)
    monkeypatch.setattr(transformers.LlamaForCausalLM, "__init__", refuse)
    assert load_mlx_model(str(tiny_model_dir), dtype="float32").num_layers == 4


def test_a_non_llama_folder_is_refused_before_any_weight_is_read(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "qwen"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="qwen2", architectures=["Qwen2ForCausalLM"])
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").write_bytes(b"not read")
    with pytest.raises(UserError, match=r"model_type 'qwen2' is not llama.*--engine torch"):
        load_mlx_model(str(folder))


def test_a_folder_without_safetensors_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "bare"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(UserError, match=r"no \*\.safetensors"):
        load_mlx_model(str(folder))


def test_an_unknown_dtype_is_refused(tiny_model_dir: Path) -> None:
    with pytest.raises(UserError, match="--dtype float8: unknown dtype"):
        load_mlx_model(str(tiny_model_dir), dtype="float8")
