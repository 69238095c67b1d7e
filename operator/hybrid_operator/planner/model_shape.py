"""Model shapes from a Hugging Face config.json alone: parameter, FLOP and byte counts per token.

Covers decoder-only transformers with grouped-query attention and a gated (SwiGLU) MLP — Llama,
Mistral, Qwen2 and the demo models. Counts ignore norms' FLOPs and rotary embeddings (< 0.1%).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from hybrid_workers.enums import DType, WireEncoding

from hybrid_operator.planner.errors import PlannerError
from hybrid_operator.planner.weight_formats import weight_format

_DATA = Path(__file__).with_name("models.yaml")

# Bytes per element of weights, activations and KV cache for each model dtype.
DTYPE_BYTES: dict[str, int] = {DType.FLOAT32: 4, DType.BFLOAT16: 2, DType.FLOAT16: 2}
# KV wire encodings: bytes per element on the wire (None = the model dtype's own size).
WIRE_BYTES: dict[str, int | None] = {WireEncoding.NONE: None, WireEncoding.FP8: 1, WireEncoding.INT8: 1}
# Compressed KV carries one float32 scale per (layer, K|V, KV head): negligible, but counted.
SCALE_BYTES = 4
# config.json fields that mark a mixture-of-experts model (its FLOPs and bytes per token differ).
MOE_FIELDS = ("num_local_experts", "num_experts", "n_routed_experts")


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a decoder-only transformer that decide its cost."""

    name: str  # built-in name or config path
    layers: int  # num_hidden_layers
    hidden: int  # hidden_size
    heads: int  # num_attention_heads
    kv_heads: int  # num_key_value_heads (GQA)
    head_dim: int  # per-head width; hidden // heads unless the config says otherwise
    intermediate: int  # MLP width (gated: gate, up and down projections)
    vocab: int  # vocabulary size
    tied_embeddings: bool  # lm_head shares the embedding matrix
    max_context: int | None = None  # max_position_embeddings; None when the config gives none

    @property
    def attention_params_per_layer(self) -> int:
        """q, k, v and o projection weights of one layer."""
        q_and_o = 2 * self.hidden * self.heads * self.head_dim
        k_and_v = 2 * self.hidden * self.kv_heads * self.head_dim
        return q_and_o + k_and_v

    @property
    def mlp_params_per_layer(self) -> int:
        """gate, up and down projection weights of one layer."""
        return 3 * self.hidden * self.intermediate

    @property
    def linear_params_per_layer(self) -> int:
        """Matrix weights of one decoder layer (what its matmuls multiply by)."""
        return self.attention_params_per_layer + self.mlp_params_per_layer

    @property
    def embedding_params(self) -> int:
        """The token embedding table (also the lm_head when tied)."""
        return self.vocab * self.hidden

    @property
    def params(self) -> int:
        """All parameters: layers (with their two norms), final norm, embedding, untied lm_head."""
        per_layer = self.linear_params_per_layer + 2 * self.hidden
        head = 0 if self.tied_embeddings else self.embedding_params
        return self.layers * per_layer + self.hidden + self.embedding_params + head

    def weight_bytes(self, dtype: str, weights: str | None = None) -> int:
        """Bytes of all weights in `dtype`, or in the weight format `weights` (what must fit in memory)."""
        return round(self.params * bytes_per_weight(dtype, weights))

    def decode_read_bytes(self, dtype: str, weights: str | None = None) -> int:
        """Weight bytes one decode step reads: all but the embedding table (a one-row lookup),
        which is read anyway when tied because it is the lm_head too."""
        unread = 0 if self.tied_embeddings else self.embedding_params
        return round((self.params - unread) * bytes_per_weight(dtype, weights))

    def check_context(self, tokens: int) -> None:
        """PlannerError when `tokens` (prompt + output) exceed the model's context length."""
        if self.max_context is not None and tokens > self.max_context:
            raise PlannerError(
                f"{self.name}: {tokens} prompt + output tokens exceed the model's context of "
                f"{self.max_context} tokens (max_position_embeddings)"
            )

    def layer_flops(self, tokens: int, past: int = 0) -> float:
        """FLOPs of one decoder layer for `tokens` new tokens after `past` cached ones.

        Linear: 2 x weights per token. Attention: the token at position s (0-based) scores and mixes
        s + 1 keys: 2·heads·head_dim·(s+1) for QK^T and as much for AV (causal, no masked work).
        """
        return self.layer_linear_flops(tokens) + self.layer_attention_flops(tokens, past)

    def layer_linear_flops(self, tokens: int) -> float:
        """FLOPs of one layer's projections (GEMMs) for `tokens` tokens: 2 x weights per token."""
        return 2.0 * self.linear_params_per_layer * tokens

    def layer_attention_flops(self, tokens: int, past: int = 0) -> float:
        """FLOPs of one layer's QK^T and AV for `tokens` new tokens after `past` cached ones."""
        keys = tokens * past + tokens * (tokens + 1) / 2  # sum over s = past .. past+tokens-1 of (s + 1)
        return 4.0 * self.heads * self.head_dim * keys

    @property
    def head_flops(self) -> float:
        """FLOPs of the lm_head for one token (the only position whose logits are computed)."""
        return 2.0 * self.embedding_params

    def kv_bytes_per_token_per_layer(self, dtype: str) -> int:
        """K and V bytes one token adds to one layer's cache: 2 · kv_heads · head_dim · bytes."""
        return 2 * self.kv_heads * self.head_dim * dtype_bytes(dtype)

    def kv_bytes_per_token(self, dtype: str) -> int:
        """K and V bytes one token adds to the whole cache."""
        return self.layers * self.kv_bytes_per_token_per_layer(dtype)

    def kv_wire_bytes_per_layer(self, tokens: int, dtype: str, compression: str = "none") -> int:
        """Bytes of one layer's K and V for `tokens` tokens on the wire with `compression`."""
        per_element = WIRE_BYTES.get(compression, -1)
        if per_element == -1:
            raise PlannerError(f"unknown KV compression {compression!r}; use one of {', '.join(WIRE_BYTES)}")
        if per_element is None:
            return tokens * self.kv_bytes_per_token_per_layer(dtype)
        elements = 2 * self.kv_heads * self.head_dim * tokens
        return elements * per_element + 2 * self.kv_heads * SCALE_BYTES


def dtype_bytes(dtype: str) -> int:
    """Bytes per element of `dtype`; PlannerError naming the valid dtypes otherwise."""
    if dtype not in DTYPE_BYTES:
        raise PlannerError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPE_BYTES)}")
    return DTYPE_BYTES[dtype]


def bytes_per_weight(dtype: str, weights: str | None = None) -> float:
    """Bytes per parameter: the weight format's when given, else the dtype's."""
    if weights is None:
        return float(dtype_bytes(dtype))
    return weight_format(weights).bytes_per_weight()


def _field(config: Mapping[str, Any], key: str, where: str, default: int | None = None) -> int:
    value = config.get(key, default)
    if value is None:
        raise PlannerError(f"{where}: config has no {key!r}; is it a decoder-only transformer config.json?")
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise PlannerError(f"{where}: {key} = {value!r} must be a positive integer")
    return value


def shape_from_config(config: Mapping[str, Any], name: str) -> ModelShape:
    """A ModelShape from the fields of a Hugging Face config.json (nested `text_config` accepted)."""
    if not isinstance(config, Mapping):
        raise PlannerError(f"{name}: a model config must be a JSON object, got {type(config).__name__}")
    if "num_hidden_layers" not in config and isinstance(config.get("text_config"), Mapping):
        config = config["text_config"]
    experts = next((config[k] for k in MOE_FIELDS if isinstance(config.get(k), int) and config[k] > 1), None)
    if experts is not None:
        raise PlannerError(
            f"{name}: a mixture-of-experts model ({experts} experts); the planner models dense decoders only"
        )
    heads = _field(config, "num_attention_heads", name)
    hidden = _field(config, "hidden_size", name)
    if "head_dim" not in config and hidden % heads:
        raise PlannerError(f"{name}: hidden_size {hidden} is not divisible by num_attention_heads {heads}")
    return ModelShape(
        name=name,
        layers=_field(config, "num_hidden_layers", name),
        hidden=hidden,
        heads=heads,
        kv_heads=_field(config, "num_key_value_heads", name, heads),
        head_dim=_field(config, "head_dim", name, hidden // heads),
        intermediate=_field(config, "intermediate_size", name),
        vocab=_field(config, "vocab_size", name),
        tied_embeddings=bool(config.get("tie_word_embeddings", False)),
        max_context=(
            _field(config, "max_position_embeddings", name) if "max_position_embeddings" in config else None
        ),
    )


@cache
def _catalog() -> dict[str, dict[str, Any]]:
    data: dict[str, dict[str, Any]] = yaml.safe_load(_DATA.read_text())["models"]
    return data


def builtin_model_names() -> list[str]:
    """Names `model_shape()` accepts without a file."""
    return sorted(_catalog())


def _canonical(source: str) -> str | None:
    wanted = source.strip().lower()
    for name, entry in _catalog().items():
        if wanted == name or wanted in (alias.lower() for alias in entry.get("aliases", ())):
            return name
    return None


def model_shape(ref: str) -> ModelShape:
    """A built-in shape by name or Hugging Face id alias, a config.json path, or a folder holding one."""
    name = _canonical(ref)
    if name is not None:
        return shape_from_config(_catalog()[name]["config"], name)
    path = Path(ref)
    if path.is_dir():
        path = path / "config.json"
    if path.is_file():
        try:
            config = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise PlannerError(f"cannot read model config {str(path)!r}: {exc}") from None
        return shape_from_config(config, str(path))
    raise PlannerError(
        f"unknown model {ref!r}: not a built-in shape ({', '.join(builtin_model_names())}) "
        "and not a path to a config.json or a folder holding one"
    )
