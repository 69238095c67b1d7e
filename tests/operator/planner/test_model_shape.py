"""Parameter, FLOP and byte counts of model shapes against hand-computed values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hybrid_operator.planner import PlannerError, model_shape, shape_from_config


def test_llama_8b_parameter_count_is_the_published_8_03_billion() -> None:
    shape = model_shape("llama-3.1-8b")
    # per layer: q,o 2·4096·4096 + k,v 2·4096·1024 + mlp 3·4096·14336 + 2 norms · 4096
    per_layer = 2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336 + 2 * 4096
    assert per_layer == 218_112_000
    # 32 layers + final norm + embedding + untied lm_head (128256 · 4096 each)
    assert shape.params == 32 * 218_112_000 + 4096 + 2 * 525_336_576 == 8_030_261_248


def test_llama_8b_kv_cache_of_8k_tokens_is_exactly_one_gibibyte_in_fp16() -> None:
    shape = model_shape("llama-3.1-8b")
    assert shape.kv_bytes_per_token_per_layer("float16") == 2 * 8 * 128 * 2 == 4096
    assert shape.kv_bytes_per_token("float16") == 128 * 1024
    assert 8192 * shape.kv_bytes_per_token("float16") == 1 << 30
    assert shape.kv_bytes_per_token("float32") == 256 * 1024


def test_llama_8b_decode_reads_every_weight_but_the_embedding_table() -> None:
    shape = model_shape("llama-3.1-8b")
    assert shape.decode_read_bytes("bfloat16") == (8_030_261_248 - 525_336_576) * 2 == 15_009_849_344


def test_llama_8b_layer_flops_count_linear_and_causal_attention() -> None:
    shape = model_shape("llama-3.1-8b")
    # one token at position 0: 2 · 218,103,808 linear weights + 4 · 4096 · 1 key
    assert shape.layer_flops(1) == 2 * 218_103_808 + 4 * 4096
    # 8192 tokens: linear 2·W·8192, attention 4·4096·(1 + 2 + ... + 8192)
    assert shape.layer_flops(8192) == 2 * 218_103_808 * 8192 + 4 * 4096 * 33_558_528
    # one decode step after 8192 cached tokens attends to 8193 keys
    assert shape.layer_flops(1, past=8192) == 2 * 218_103_808 + 4 * 4096 * 8193


def test_fp8_and_int8_wire_carry_one_byte_per_element_plus_per_head_scales() -> None:
    shape = model_shape("llama-3.1-8b")
    none = shape.kv_wire_bytes_per_layer(8192, "float16", "none")
    assert none == 32 * 1024 * 1024  # 32 MiB per layer
    for compression in ("fp8", "int8"):
        assert shape.kv_wire_bytes_per_layer(8192, "float16", compression) == 16 * 1024 * 1024 + 2 * 8 * 4


def test_demo_bench_counts_by_hand() -> None:
    shape = model_shape("demo-bench")
    per_layer_linear = 2 * 1024 * 1024 + 2 * 1024 * 256 + 3 * 1024 * 2816
    assert shape.linear_params_per_layer == per_layer_linear == 11_272_192
    assert shape.params == 12 * (per_layer_linear + 2048) + 1024 + 2 * 32000 * 1024 == 200_827_904
    assert shape.kv_bytes_per_token("float32") == 12 * 2 * 4 * 64 * 4


def test_demo_tiny_counts_by_hand() -> None:
    shape = model_shape("demo-tiny")
    per_layer_linear = 2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 128
    assert shape.params == 4 * (per_layer_linear + 128) + 64 + 2 * 1024 * 64 == 279_104


def test_builtin_demo_shapes_match_the_engine_presets() -> None:
    demo = pytest.importorskip("hybrid_workers.engine.demo_model")
    for name, preset in demo.PRESETS.items():
        shape = model_shape(f"demo-{name}")
        assert (shape.layers, shape.hidden, shape.heads, shape.kv_heads) == (
            preset.layers,
            preset.hidden,
            preset.heads,
            preset.kv_heads,
        )
        assert (shape.intermediate, shape.vocab, shape.tied_embeddings) == (
            preset.intermediate,
            preset.vocab,
            False,
        )


def test_shape_from_the_written_tiny_model_counts_its_real_parameters(tiny_lm, tiny_model_dir: Path) -> None:
    shape = model_shape(str(tiny_model_dir))  # reads the folder's config.json
    assert shape.params == sum(p.numel() for p in tiny_lm.model.parameters())
    assert (shape.layers, shape.hidden, shape.kv_heads) == (4, 64, 2)


def test_config_json_path_nested_text_config_and_head_dim(tmp_path: Path) -> None:
    config = {
        "text_config": {
            "num_hidden_layers": 2,
            "hidden_size": 96,
            "num_attention_heads": 3,
            "intermediate_size": 200,
            "vocab_size": 10,
            "head_dim": 40,
        }
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    shape = model_shape(str(path))
    assert (shape.head_dim, shape.kv_heads) == (40, 3)  # explicit head_dim; kv_heads defaults to heads


def test_hugging_face_ids_alias_the_builtin_shapes() -> None:
    assert model_shape("meta-llama/Llama-3.1-8B-Instruct") == model_shape("llama-3.1-8b")
    # Qwen2.5-7B publishes 7.61 B parameters (its q/k/v biases, 0.2 M, are not counted)
    assert model_shape("Qwen/Qwen2.5-7B-Instruct").params == 7_615_487_488


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"hidden_size": 64}, "no 'num_attention_heads'"),
        ({"num_local_experts": 8, "hidden_size": 64}, "a mixture-of-experts model \\(8 experts\\)"),
        (
            {
                "num_hidden_layers": 2,
                "hidden_size": 64,
                "num_attention_heads": 5,
                "intermediate_size": 1,
                "vocab_size": 1,
            },
            "not divisible",
        ),
        (
            {
                "num_hidden_layers": -1,
                "hidden_size": 64,
                "num_attention_heads": 4,
                "intermediate_size": 1,
                "vocab_size": 1,
            },
            "num_hidden_layers = -1",
        ),
    ],
)
def test_bad_configs_are_rejected_naming_the_field(config: dict, message: str) -> None:
    with pytest.raises(PlannerError, match=message):
        shape_from_config(config, "bad")


def test_unknown_model_lists_the_builtin_names() -> None:
    with pytest.raises(PlannerError, match=r"unknown model 'gpt-5'.*llama-3.1-8b"):
        model_shape("gpt-5")


def test_unknown_dtype_and_compression_name_the_choices() -> None:
    shape = model_shape("demo-tiny")
    with pytest.raises(PlannerError, match="unknown dtype 'fp16'; use one of float32"):
        shape.weight_bytes("fp16")
    with pytest.raises(PlannerError, match="unknown KV compression 'zstd'"):
        shape.kv_wire_bytes_per_layer(4, "float32", "zstd")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("encoding", ["none", "fp8", "int8"])
def test_wire_bytes_equal_what_the_kv_codec_encodes(dtype: str, encoding: str) -> None:
    torch = pytest.importorskip("torch")
    from hybrid_workers.enums import WireEncoding
    from hybrid_workers.kv.compression import encode

    shape = model_shape("demo-bench")
    keys, values = (
        torch.randn(1, shape.kv_heads, 100, shape.head_dim).to(getattr(torch, dtype)) for _ in "kv"
    )
    encoded = [encode(tensor, WireEncoding(encoding)) for tensor in (keys, values)]  # one layer, as sent
    sent = sum(e.data.nbytes + len(e.scales) for e in encoded)
    assert shape.kv_wire_bytes_per_layer(100, dtype, encoding) == sent
