"""The embedded demo model: deterministic, loadable with plain transformers, safe to create concurrently."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch
from hybrid_workers.engine import PRESETS, demo_model_dir, write_demo_model
from hybrid_workers.engine.demo_model import GENERATOR_VERSION, STAMP_FILE
from hybrid_workers.errors import UserError


def test_writing_twice_gives_identical_files(tiny_model_dir, tmp_path):
    again = write_demo_model(tmp_path / "again", "tiny")
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (again / name).read_bytes() == (tiny_model_dir / name).read_bytes(), name


def test_loads_with_plain_transformers_offline(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir, local_files_only=True)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.config.num_key_value_heads < model.config.num_attention_heads  # GQA
    ids = tokenizer.encode("Hello, world!")
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == "Hello, world!"
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert chat == "<|user|>\nhi<|end|>\n<|assistant|>\n"


def test_greedy_output_is_not_one_token_repeated(tiny_lm):
    prompt = torch.tensor([tiny_lm.tokenizer.encode("What is the capital of France?")])
    with torch.no_grad():
        out = tiny_lm.model.generate(prompt, max_new_tokens=40, do_sample=False, pad_token_id=0)
    assert len(set(out[0, prompt.shape[1] :].tolist())) >= 10


def test_bench_preset_has_the_reference_shape():
    from transformers import LlamaConfig, LlamaForCausalLM

    shape = PRESETS["bench"]
    config = LlamaConfig(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        tie_word_embeddings=False,
    )
    with torch.device("meta"):
        params = sum(p.numel() for p in LlamaForCausalLM(config).parameters())
    assert 190e6 < params < 210e6
    assert (shape.layers, shape.hidden, shape.heads, shape.kv_heads) == (12, 1024, 16, 4)
    assert shape.context >= 2048


@pytest.mark.slow
def test_bench_tokenizer_reaches_32000_tokens_deterministically():
    from hybrid_workers.engine.demo_tokenizer import train_tokenizer

    shape = PRESETS["bench"]
    first = train_tokenizer(shape.vocab, shape.corpus_sentences)
    assert len(first) == 32000
    assert (
        first.backend_tokenizer.to_str()
        == train_tokenizer(shape.vocab, shape.corpus_sentences).backend_tokenizer.to_str()
    )


def test_concurrent_first_use_yields_one_complete_model(tmp_path, monkeypatch):
    monkeypatch.setenv("HYBRID_INFERENCE_CACHE_DIR", str(tmp_path))
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(demo_model_dir("tiny"))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [tmp_path / "demo-tiny"] * 2
    assert (tmp_path / "demo-tiny" / "model.safetensors").is_file()
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    assert leftovers == [".demo-tiny.lock", "demo-tiny"]  # no staging folder left behind


def test_a_stale_or_incomplete_cached_model_is_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("HYBRID_INFERENCE_CACHE_DIR", str(tmp_path))
    stale = tmp_path / "demo-tiny"
    stale.mkdir()
    (stale / "config.json").write_text("{}")  # e.g. an interrupted write, or an older generator
    (stale / STAMP_FILE).write_text('{"preset": "tiny", "generator": 0}')
    path = demo_model_dir("tiny")
    assert path == stale
    assert json.loads((path / STAMP_FILE).read_text()) == {"preset": "tiny", "generator": GENERATOR_VERSION}
    assert (path / "model.safetensors").is_file()


def test_an_unknown_preset_is_refused(tmp_path):
    with pytest.raises(UserError, match="preset 'huge': unknown; use one of tiny, bench"):
        write_demo_model(tmp_path, "huge")
