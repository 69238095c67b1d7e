"""load_model(): folders, HF ids, dtypes, devices, refusals with one-line errors, and the fingerprint."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from hybrid_workers.engine import load_model
from hybrid_workers.engine.loading import resolve_device
from hybrid_workers.errors import UserError
from hybrid_workers.model_identity import model_identity


def _load(path: Path | str, **kwargs):
    return load_model(str(path), device=kwargs.pop("device", "cpu"), progress=False, **kwargs)


def _saved_as(source: Path, directory: Path, dtype: torch.dtype) -> Path:
    """A copy of the model in `source` saved in `dtype` (a private copy: the shared fixtures stay intact)."""
    lm = _load(source)
    lm.model.to(dtype).save_pretrained(directory)
    lm.tokenizer.save_pretrained(directory)
    return directory


def test_the_tiny_model_loads_with_its_facts(tiny_lm, tiny_model_dir):
    assert tiny_lm.dtype == torch.float32
    assert tiny_lm.device == torch.device("cpu")
    assert (tiny_lm.num_layers, tiny_lm.num_kv_heads, tiny_lm.head_dim) == (4, 2, 16)
    assert (tiny_lm.max_context, tiny_lm.vocab_size) == (512, 1024)
    assert tiny_lm.tokenizer.eos_token_id in tiny_lm.eos_token_ids
    assert len(tiny_lm.eos_token_ids) == 2  # </s> and the chat template's <|end|>
    assert not tiny_lm.model.training


def test_no_model_means_the_cached_demo_model(tiny_model_dir):
    lm = load_model(None, device="cpu", progress=False)
    assert Path(lm.name) == tiny_model_dir


def test_a_missing_folder_is_refused(tmp_path):
    with pytest.raises(UserError, match=r"--model .*/nothing/here: no such folder"):
        _load(tmp_path / "nothing" / "here")


def test_a_folder_without_config_is_refused(tmp_path):
    with pytest.raises(UserError, match=r"no config\.json"):
        _load(tmp_path)


def test_an_id_missing_from_the_local_hf_cache_is_refused_without_download():
    with pytest.raises(UserError, match="not in the local Hugging Face cache"):
        _load("hybrid-inference-tests/no-such-model")


@pytest.mark.parametrize("architectures", [["BertForMaskedLM"], None])
def test_an_encoder_model_is_refused(tmp_path, architectures):
    from transformers import BertConfig

    BertConfig(architectures=architectures).save_pretrained(tmp_path)
    with pytest.raises(UserError, match="not a decoder-only causal language model"):
        _load(tmp_path)


def test_an_unknown_dtype_is_refused_with_the_choices(tiny_model_dir):
    with pytest.raises(UserError, match="--dtype bf16: unknown dtype; use one of auto, float32, bfloat16"):
        _load(tiny_model_dir, dtype="bf16")


def test_unknown_or_unavailable_devices_are_refused():
    with pytest.raises(UserError, match="--device tpu: unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="--device cuda: not available"):
            resolve_device("cuda")
        assert resolve_device("auto").type in ("cpu", "mps")


def test_auto_dtype_is_the_models_own_but_float32_for_float16_on_cpu(tiny_model_dir, tmp_path):
    half = _load(_saved_as(tiny_model_dir, tmp_path / "f16", torch.float16), dtype="auto")
    assert half.dtype == torch.float32
    bf16 = _load(_saved_as(tiny_model_dir, tmp_path / "bf16", torch.bfloat16), dtype="auto")
    assert bf16.dtype == torch.bfloat16
    assert next(bf16.model.parameters()).dtype == torch.bfloat16


def test_fingerprint_is_the_model_identity_of_the_files_not_the_path_or_dtype(
    tiny_lm, tiny_lm_bf16, tiny_model_dir, tmp_path
):
    copy = shutil.copytree(tiny_model_dir, tmp_path / "elsewhere")
    assert _load(copy).fingerprint == tiny_lm.fingerprint == model_identity(tiny_model_dir)
    assert tiny_lm_bf16.fingerprint == tiny_lm.fingerprint  # the dtype is checked on its own
    changed = _load(copy)
    with torch.no_grad():
        changed.model.model.layers[2].mlp.up_proj.weight.mul_(1.01)
    changed.model.save_pretrained(copy)
    assert _load(copy).fingerprint != tiny_lm.fingerprint


def test_loading_shows_a_progress_bar_unless_asked_not_to(tiny_model_dir, capfd):
    load_model(str(tiny_model_dir), device="cpu", progress=True)
    assert "Loading weights" in capfd.readouterr().err
    load_model(str(tiny_model_dir), device="cpu", progress=False)
    assert "Loading weights" not in capfd.readouterr().err
