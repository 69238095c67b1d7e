"""Load a Hugging Face Llama model folder into mlx-lm's Llama, straight from its safetensors files.

No torch copy of the weights is ever made: the arrays come from `mx.load` of the folder's
*.safetensors files and are cast to the requested dtype in MLX. The tokenizer, the config and the
EOS ids come from transformers (no weights), so prompts tokenize exactly as on the torch engine.
The result is a ModelFacts like the torch engine's LoadedModel (the KV receiver, the HTTP layer and
the prefill client read only those facts), so both engines meet one decode worker.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import mlx.core as mx
import torch

from hybrid_workers.engine.loading import ModelFacts, _load_config, _model_path, check_dtype, resolve_dtype
from hybrid_workers.enums import ComputeDevice, Device, Engine
from hybrid_workers.errors import UserError
from hybrid_workers.mlx_engine.arrays import mx_dtype
from hybrid_workers.mlx_engine.model_args import model_args, refuse
from hybrid_workers.model_identity import model_identity


@dataclass(frozen=True, eq=False)
class MlxModel(ModelFacts):
    """An mlx-lm Llama ready for decode, with the facts the workers need (engine.loading.ModelFacts).

    `model` is an mlx_lm.models.llama.Model, weights evaluated, in `mx_dtype`; `device` is the torch
    device class of what MLX computes on: "mps" on Metal (Apple's GPU: the decode worker's GPU defaults
    for batch size and KV budget apply), "cpu" on MLX's CPU build. No torch work runs there.
    """

    engine: ClassVar[Engine] = Engine.MLX

    args: dict[str, Any]  # the ModelArgs the model was built with (translated, see model_args)
    # Serialises MLX work on this model across threads (forward passes and KV writes): decode.runner's
    # model_lock returns it, and MlxKVSlot takes it while it writes a received layer.
    lock: Any = field(default_factory=threading.RLock)  # threading.RLock: the engine re-enters it
    compute: Any = None  # the mx.Device MLX computes on (chosen at load; default streams are per thread)

    @contextmanager
    def computing(self) -> Iterator[None]:
        """Hold the lock and compute on `compute` in this thread (the engine loop, a receiver, scoring)."""
        with self.lock, mx.stream(self.compute or mx.default_device()):
            yield

    @property
    def mx_dtype(self) -> Any:
        """The MLX dtype of the weights and the KV cache."""
        return mx_dtype(self.dtype)


def use_device(device: str) -> None:
    """Apply `--device` to MLX: auto keeps MLX's default (Metal when present), cpu forces the CPU."""
    if device == Device.CPU:
        mx.set_default_device(mx.cpu)
    elif device != Device.AUTO:
        raise UserError(
            f"--device {device}: the MLX engine computes on Metal (auto) or the CPU; use --device auto or cpu"
        )


def mlx_compute_device(device: Any = None) -> ComputeDevice:
    """metal when MLX computes (on `device`, default: this thread's default) on Apple's GPU, cpu otherwise."""
    chosen = device if device is not None else mx.default_device()
    return ComputeDevice.METAL if chosen.type == mx.DeviceType.gpu else ComputeDevice.CPU


def _read_weights(folder: Path, name: str) -> dict[str, mx.array]:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise UserError(
            f"--model {name}: no *.safetensors files in {folder}; the MLX engine reads safetensors"
        )
    weights: dict[str, mx.array] = {}
    for file in files:
        weights.update(mx.load(str(file)))  # type: ignore[arg-type]  # a dict for .safetensors
    return weights


def _build(args: dict[str, Any], weights: dict[str, mx.array], dtype: Any, name: str) -> Any:
    from mlx_lm.models import llama

    model = llama.Model(llama.ModelArgs(**args))
    weights = model.sanitize(weights)
    cast = {key: value.astype(dtype) for key, value in weights.items()}
    try:
        model.load_weights(list(cast.items()), strict=True)
    except ValueError as exc:
        raise refuse(name, f"weights do not fit a Llama of this config ({exc})") from None
    model.eval()
    mx.eval(model.parameters())
    return model


def _eos_ids(folder: Path, config: Any, tokenizer: Any) -> frozenset[int]:
    from transformers import GenerationConfig

    ids: set[int] = set()
    try:
        generation: Any = GenerationConfig.from_pretrained(str(folder), local_files_only=True)
    except OSError:
        generation = None
    for source in (generation, config, tokenizer):
        value = getattr(source, "eos_token_id", None)
        ids.update([value] if isinstance(value, int) else list(value or []))
    return frozenset(ids)


def load_mlx_model(model: str | None = None, dtype: str = "auto") -> MlxModel:
    """Load a Llama-family model folder (or cached HF id) into MLX; UserError, one line, for anything else."""
    from transformers import AutoTokenizer

    check_dtype(dtype)
    path = _model_path(model)
    name = model or path
    config = _load_config(path, name)
    args = model_args(config, name)  # refuses non-Llama before any weight is read
    folder = Path(path) if Path(path).is_dir() else _snapshot_folder(path, name)
    # float16 is fast on Metal; on MLX's CPU build `auto` takes float32 for it, as the torch engine does.
    on_cpu = mlx_compute_device() is ComputeDevice.CPU
    torch_dtype = resolve_dtype(dtype, config, torch.device("cpu" if on_cpu else "mps"))
    mlx_model = _build(args, _read_weights(folder, name), mx_dtype(torch_dtype), name)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return MlxModel(
        model=mlx_model,
        tokenizer=tokenizer,
        name=name,
        device=torch.device("cpu" if on_cpu else "mps"),
        dtype=torch_dtype,
        fingerprint=model_identity(folder),
        num_layers=args["num_hidden_layers"],
        num_kv_heads=args["num_key_value_heads"],
        head_dim=args["head_dim"],
        max_context=args["max_position_embeddings"],
        eos_token_ids=_eos_ids(folder, config, tokenizer),
        vocab_size=args["vocab_size"],
        args=args,
        compute=mx.default_device(),
    )


def _snapshot_folder(model_id: str, name: str) -> Path:
    """The local Hugging Face cache folder of `model_id` (never downloads)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model_id, local_files_only=True))
    except Exception as exc:  # the hub raises several kinds for "not cached"
        raise UserError(
            f"--model {name}: not in the local Hugging Face cache ({exc}); pass a folder"
        ) from None
