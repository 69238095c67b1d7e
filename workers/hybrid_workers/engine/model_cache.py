"""The model cache: folders written once (demo models, the converted default model), locked, stamped last.

A cached folder is `cache_root()/NAME`. It is used only when its stamp file (written after everything
else) equals the stamp its writer expects, so an interrupted write or an older generator is redone.
Several processes asking at once are safe: one writes, under a lock file, into a staging folder that is
renamed into place; the others wait for the lock and then find the stamp.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CACHE_DIR_ENV = "HYBRID_INFERENCE_CACHE_DIR"
STAMP_FILE = "hybrid-inference-demo.json"  # name kept from the demo model's first cache layout


def cache_root() -> Path:
    """Where cached models live: $HYBRID_INFERENCE_CACHE_DIR, else ~/.cache/hybrid-inference."""
    configured = os.environ.get(CACHE_DIR_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "hybrid-inference"


def write_stamp(folder: Path, stamp: dict[str, Any]) -> None:
    """Mark `folder` complete: call after every other file is written."""
    (folder / STAMP_FILE).write_text(json.dumps(stamp, sort_keys=True) + "\n")


def is_current(folder: Path, stamp: dict[str, Any]) -> bool:
    """True when `folder` holds a complete model whose stamp equals `stamp`."""
    try:
        return json.loads((folder / STAMP_FILE).read_text()) == stamp
    except (OSError, ValueError):
        return False


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on `lock_path` (other processes and threads wait)."""
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cached_folder(name: str, stamp: dict[str, Any], write: Callable[[Path], object]) -> Path:
    """`cache_root()/name`, written by `write(folder)` first when it is missing, incomplete or stale.

    `write` fills an empty staging folder; the stamp is written after it returns, then the folder is
    renamed into place (replacing a stale one). Returns the folder's path.
    """
    final = cache_root() / name
    if is_current(final, stamp):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(final.parent / f".{name}.lock"):
        if not is_current(final, stamp):
            _replace(final, stamp, write)
    return final


def _replace(final: Path, stamp: dict[str, Any], write: Callable[[Path], object]) -> None:
    """Write into a staging folder, stamp it, then swap it in for whatever `final` held."""
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    stale = final.parent / f"{staging.name}-stale"
    try:
        write(staging)
        write_stamp(staging, stamp)
        if final.exists():
            os.rename(final, stale)
        os.rename(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(stale, ignore_errors=True)
