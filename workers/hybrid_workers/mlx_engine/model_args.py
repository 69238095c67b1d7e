"""Hugging Face Llama config -> mlx-lm's Llama ModelArgs, translated field by field (never passed through).

mlx-lm builds its ModelArgs from whatever keys a config.json happens to hold and silently uses its own
defaults for the rest. transformers 5 writes the rope base as `rope_parameters.rope_theta`, while
mlx-lm's Llama reads a top-level `rope_theta` (default 10000): a model trained with another base
(SmolLM2: 1e5, Llama 3: 5e5) would load without complaint and decode garbage. So this module reads the
config through transformers (which normalises old and new layouts) and names every field mlx-lm gets;
anything it cannot represent exactly is refused with a one-line error at start.
"""

from __future__ import annotations

from typing import Any

from hybrid_workers.errors import UserError

# Rope variants mlx-lm's Llama implements with the same formulas as transformers.
_ROPE_TYPES = frozenset({"default", "linear", "dynamic", "llama3", "yarn"})
_ROPE_SCALING_KEYS = (
    "factor",
    "low_freq_factor",
    "high_freq_factor",
    "original_max_position_embeddings",
    "beta_fast",
    "beta_slow",
    "mscale",
    "mscale_all_dim",
)


def refuse(name: str, what: str) -> UserError:
    """The one-line start-up error for a model the MLX engine cannot run."""
    return UserError(
        f"--model {name}: {what}; the MLX engine runs Llama-family models only, use --engine torch"
    )


def rope_settings(config: Any, name: str) -> tuple[float, dict[str, Any] | None]:
    """(rope base, mlx-lm rope_scaling dict or None) from transformers' normalised `rope_parameters`."""
    params = dict(getattr(config, "rope_parameters", None) or {})
    if not params and getattr(config, "rope_theta", None) is not None:  # transformers 4 layout
        params = {"rope_theta": config.rope_theta, **(getattr(config, "rope_scaling", None) or {})}
    if "rope_theta" not in params:
        raise refuse(name, "config names no rope base (rope_parameters.rope_theta)")
    rope_type = str(params.get("rope_type") or params.get("type") or "default")
    if rope_type not in _ROPE_TYPES:
        raise refuse(
            name, f"rope_type {rope_type!r} is not supported (supported: {', '.join(sorted(_ROPE_TYPES))})"
        )
    if rope_type == "default":
        return float(params["rope_theta"]), None
    scaling = {key: params[key] for key in _ROPE_SCALING_KEYS if params.get(key) is not None}
    return float(params["rope_theta"]), {"rope_type": rope_type, **scaling}


def check_llama(config: Any, name: str) -> None:
    """Refuse anything mlx-lm's Llama would compute differently from transformers' Llama."""
    if getattr(config, "model_type", None) != "llama":
        raise refuse(name, f"model_type {getattr(config, 'model_type', None)!r} is not llama")
    act = getattr(config, "hidden_act", "silu")
    if act != "silu":
        raise refuse(name, f"hidden_act {act!r} is not silu")
    if getattr(config, "sliding_window", None) or getattr(config, "layer_types", None) not in (
        None,
        ["full_attention"] * config.num_hidden_layers,
    ):
        raise refuse(name, "sliding-window attention layers are not supported")


def model_args(config: Any, name: str) -> dict[str, Any]:
    """The keyword arguments of mlx_lm.models.llama.ModelArgs for a transformers LlamaConfig."""
    check_llama(config, name)
    rope_theta, rope_scaling = rope_settings(config, name)
    heads = int(config.num_attention_heads)
    return {
        "model_type": "llama",
        "hidden_size": int(config.hidden_size),
        "num_hidden_layers": int(config.num_hidden_layers),
        "intermediate_size": int(config.intermediate_size),
        "num_attention_heads": heads,
        "num_key_value_heads": int(getattr(config, "num_key_value_heads", None) or heads),
        "head_dim": int(getattr(config, "head_dim", None) or config.hidden_size // heads),
        "rms_norm_eps": float(config.rms_norm_eps),
        "vocab_size": int(config.vocab_size),
        "max_position_embeddings": int(config.max_position_embeddings),
        "attention_bias": bool(getattr(config, "attention_bias", False)),
        "mlp_bias": bool(getattr(config, "mlp_bias", False)),
        "rope_theta": rope_theta,
        "rope_traditional": False,  # transformers' Llama rotates halves, not interleaved pairs
        "rope_scaling": rope_scaling,
        "tie_word_embeddings": bool(getattr(config, "tie_word_embeddings", False)),
        "layer_types": ["full_attention"] * int(config.num_hidden_layers),
        "sliding_window": None,
    }
