"""The HF config -> mlx-lm ModelArgs translation: rope base from rope_parameters, refusals at start."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch
from hybrid_workers.errors import UserError
from hybrid_workers.mlx_engine.model_args import model_args
from transformers import AutoConfig, LlamaConfig


def llama(**overrides: Any) -> LlamaConfig:
    base = {"vocab_size": 64, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2}
    return LlamaConfig(**{**base, "num_attention_heads": 4, "num_key_value_heads": 2, **overrides})


def rope(config: LlamaConfig, parameters: dict[str, Any]) -> Any:
    """`config`'s fields with other rope_parameters (a rope type transformers would not accept like this)."""
    return SimpleNamespace(**{**config.to_dict(), "rope_parameters": parameters})


def test_the_rope_base_comes_from_transformers_5_rope_parameters(theta_model_dir: Any) -> None:
    config = AutoConfig.from_pretrained(theta_model_dir)
    assert "rope_theta" not in config.to_diff_dict()  # transformers 5 nests it: the trap is real
    args = model_args(config, "theta")
    assert args["rope_theta"] == 1e5
    assert args["rope_scaling"] is None
    assert (args["num_key_value_heads"], args["head_dim"], args["tie_word_embeddings"]) == (2, 16, False)


def test_mlx_lm_own_reading_of_the_same_config_would_miss_the_rope_base(theta_model_dir: Any) -> None:
    """Why the translation exists: mlx-lm's ModelArgs.from_dict on config.json keeps its default base."""
    import json

    from mlx_lm.models.llama import ModelArgs

    raw = json.loads((theta_model_dir / "config.json").read_text())
    assert ModelArgs.from_dict(raw).rope_theta == 10000


def test_an_untranslated_rope_base_decodes_different_logits(theta_lm: Any, theta_mlx: Any) -> None:
    """The tests would notice a wrong base: the same weights with mlx-lm's default base disagree."""
    import mlx.core as mx
    from hybrid_workers.mlx_engine.arrays import to_torch_float32
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama

    wrong = llama.Model(llama.ModelArgs(**{**theta_mlx.args, "rope_theta": 10000.0}))
    wrong.load_weights(tree_flatten(theta_mlx.model.parameters()))
    ids = theta_lm.tokenizer.encode("The KV cache streams layer by layer " * 4)
    with torch.no_grad():
        want = theta_lm.model(torch.tensor([ids])).logits[0, -1]
    right = to_torch_float32(theta_mlx.model(mx.array([ids]))[0, -1])
    bad = to_torch_float32(wrong(mx.array([ids]))[0, -1])
    assert float((right - want).abs().max()) < 1e-3
    assert float((bad - want).abs().max()) > 1e-2


def test_llama3_rope_scaling_is_passed_on() -> None:
    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}
    config = llama(rope_parameters={"rope_theta": 5e5, **scaling, "original_max_position_embeddings": 8192})
    args = model_args(config, "llama3")
    assert args["rope_theta"] == 5e5
    assert args["rope_scaling"] == {**scaling, "original_max_position_embeddings": 8192}


@pytest.mark.parametrize(
    ("config", "named"),
    [
        (
            lambda: AutoConfig.for_model("qwen2", vocab_size=64, hidden_size=32, num_attention_heads=4),
            "qwen2",
        ),
        (lambda: llama(hidden_act="gelu"), "gelu"),
        (
            lambda: rope(llama(), {"rope_theta": 1e4, "rope_type": "longrope", "factor": 2.0}),
            "longrope",
        ),
    ],
)
def test_other_models_are_refused_with_one_line_naming_the_reason(config: Any, named: str) -> None:
    with pytest.raises(UserError) as caught:
        model_args(config(), "some/model")
    message = str(caught.value)
    assert (
        "\n" not in message and named in message and "--engine torch" in message and "some/model" in message
    )
