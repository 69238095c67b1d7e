"""The embedded demo model: a Llama-architecture model with deterministic random weights, no download.

Two presets:
- `tiny`: 4 layers, hidden 64, 4 heads / 2 KV heads (GQA), vocab 1024, context 512 — tests in seconds.
- `bench`: ≈200M parameters, 12 layers, hidden 1024, 16 heads / 4 KV heads, vocab 32000, context 2048
  (the shape docs/architecture.md "Numbers and formulas" measures), for benchmarks on a CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybrid_workers.engine.model_cache import (
    CACHE_DIR_ENV,
    STAMP_FILE,
    cache_root,
    cached_folder,
    write_stamp,
)
from hybrid_workers.errors import UserError

DEFAULT_PRESET_ENV = "HYBRID_INFERENCE_DEMO_PRESET"
WEIGHT_SEED = 1234
GENERATOR_VERSION = 1  # bump when the weights, tokenizer or config written for a preset change
__all__ = [
    "CACHE_DIR_ENV",
    "DEFAULT_PRESET_ENV",
    "GENERATOR_VERSION",
    "PRESETS",
    "STAMP_FILE",
    "cache_root",
    "demo_model_dir",
    "write_demo_model",
]


@dataclass(frozen=True)
class Preset:
    """Shape of one demo model."""

    layers: int  # decoder layers
    hidden: int  # residual stream width
    heads: int  # query heads; head_dim = hidden // heads
    kv_heads: int  # key/value heads (GQA when < heads)
    intermediate: int  # MLP width
    vocab: int  # BPE vocabulary size (trained to exactly this size)
    context: int  # max_position_embeddings
    corpus_sentences: int  # tokenizer training corpus size
    embed_std: float  # init std of the embedding: large enough that greedy output is not one token repeated


PRESETS: dict[str, Preset] = {
    "tiny": Preset(4, 64, 4, 2, 128, 1024, 512, 2_000, 1.0),
    "bench": Preset(12, 1024, 16, 4, 2816, 32000, 2048, 60_000, 1.0),
}


def _preset(name: str) -> Preset:
    if name not in PRESETS:
        raise UserError(f"demo model preset {name!r}: unknown; use one of {', '.join(PRESETS)}")
    return PRESETS[name]


def _config(preset: Preset, tokenizer):  # -> LlamaConfig
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=preset.vocab,
        hidden_size=preset.hidden,
        intermediate_size=preset.intermediate,
        num_hidden_layers=preset.layers,
        num_attention_heads=preset.heads,
        num_key_value_heads=preset.kv_heads,
        max_position_embeddings=preset.context,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="float32",
        architectures=["LlamaForCausalLM"],
    )


def _fill_weights(model, preset: Preset) -> None:
    """Overwrite every parameter from one seeded generator, in name order (independent of HF's init)."""
    import torch

    generator = torch.Generator().manual_seed(WEIGHT_SEED)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            if name.endswith("norm.weight"):
                param.fill_(1.0)
            elif name == "model.embed_tokens.weight":
                param.normal_(0.0, preset.embed_std, generator=generator)
            else:
                # Scaled like a trained network's: unit-variance inputs give unit-variance outputs.
                param.normal_(0.0, param.shape[-1] ** -0.5, generator=generator)


def write_demo_model(directory: str | os.PathLike[str], preset: str = "tiny") -> Path:
    """Write the demo model of `preset` (config, safetensors weights, tokenizer) into `directory`.

    Creates the folder if needed and overwrites files of the same names. Deterministic: the same preset
    always gives the same weights and tokenizer. Returns the folder's path.
    """
    from transformers import GenerationConfig, LlamaForCausalLM

    from hybrid_workers.engine.demo_tokenizer import ROLE_TOKENS, train_tokenizer

    shape = _preset(preset)
    tokenizer = train_tokenizer(shape.vocab, shape.corpus_sentences)
    model = LlamaForCausalLM(_config(shape, tokenizer))
    _fill_weights(model, shape)
    end_id = tokenizer.convert_tokens_to_ids(ROLE_TOKENS[-1])
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[tokenizer.eos_token_id, end_id],
        pad_token_id=tokenizer.pad_token_id,
    )
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    write_stamp(path, _stamp(preset))  # last: marks the folder complete
    return path


def _stamp(preset: str) -> dict[str, Any]:
    return {"preset": preset, "generator": GENERATOR_VERSION}


def demo_model_dir(preset: str = "tiny") -> Path:
    """The cached demo model of `preset`, written on first use (and rewritten when the generator changed).

    Safe against several processes asking at once (see model_cache): one writes, the others wait.
    """
    _preset(preset)
    return cached_folder(f"demo-{preset}", _stamp(preset), lambda folder: write_demo_model(folder, preset))
