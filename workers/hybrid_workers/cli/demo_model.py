"""`hybrid-inference demo-model DIR`: write the embedded demo model (no download) into a folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from hybrid_workers.errors import UserError

PRESET_CHOICES = ("tiny", "bench")  # engine.demo_model.PRESETS, repeated here to keep torch out of --help


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `demo-model` command."""
    parser = subparsers.add_parser(
        "demo-model",
        help="write the demo model (Llama architecture, random weights, local tokenizer) into DIR",
        description="Writes a Llama-architecture model with deterministic random weights and a BPE "
        "tokenizer trained locally, loadable with AutoModelForCausalLM / AutoTokenizer. Presets: tiny "
        "(4 layers, for tests) and bench (~200M parameters, 12 layers, for benchmarks).",
    )
    parser.add_argument("directory", metavar="DIR", help="folder to write (created if missing)")
    parser.add_argument("--preset", default="tiny", choices=PRESET_CHOICES, help="model size [default: tiny]")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the model and say where it went."""
    target = Path(args.directory)
    if target.exists() and not target.is_dir():
        raise UserError(f"demo-model {target}: exists and is not a folder; give a new or existing folder")
    from hybrid_workers.engine.demo_model import PRESETS, write_demo_model

    try:
        path = write_demo_model(target, args.preset)
    except OSError as exc:
        raise UserError(
            f"demo-model {target}: cannot write there ({exc.strerror}); choose another folder"
        ) from None
    shape = PRESETS[args.preset]
    print(
        f"wrote demo model {args.preset!r} to {path}: {shape.layers} layers, hidden {shape.hidden}, "
        f"{shape.heads} heads / {shape.kv_heads} KV heads, vocab {shape.vocab}, context {shape.context}"
    )
    return 0
