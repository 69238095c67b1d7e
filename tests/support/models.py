"""Model folders for tests: a copy of a model that differs from it in exactly one weight element."""

from __future__ import annotations

import shutil
from pathlib import Path


def one_element_changed(source: Path, target: Path) -> Path:
    """A copy of the model in `source` whose weights differ from it in exactly one element."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(source, target)
    weights = load_file(str(target / "model.safetensors"))
    name = sorted(weights)[len(weights) // 2]
    flat = weights[name].view(-1)  # [numel]
    flat[flat.numel() // 2] += 0.5
    save_file(weights, str(target / "model.safetensors"), metadata={"format": "pt"})
    return target
