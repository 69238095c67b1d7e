"""The model identity: one digest of a model folder's weight, config and tokenizer files, engine-neutral.

Two workers may exchange KV only when they run the same weights (and dtype, checked separately). The
identity covers every byte of every weight file (`*.safetensors`, `*.bin`, their index), `config.json`
and the files that map text to token ids, so a model differing in one weight element gets another
identity, while a copy of the folder on another machine, or an MLX decoder reading the same files,
gets the same one. File names and sizes enter the digest too; modification times, the folder's path
and files that do not change the KV (generation_config.json, chat templates, READMEs) do not.

Hashing an 8B model's 16 GB takes seconds, so the per-file digests are cached beside the files in
STAMP_FILE, keyed by each file's size and modification time: a later start rehashes only files
that changed. A read-only folder (a mounted volume) gets its stamp in the cache folder instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

STAMP_FILE = ".hybrid-inference-identity.json"
STAMP_VERSION = 1
IDENTITY_HEX = 32  # hex digits of the identity (128 bits)
# Files that decide the KV a prompt produces: weights, architecture, and text -> token ids.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json")
CONFIG_FILES = frozenset(
    {
        "config.json",
        "tokenizer.json",
        "tokenizer.model",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "vocab.json",
        "merges.txt",
    }
)
_READ_BYTES = 8 << 20


def identity_files(folder: Path) -> list[Path]:
    """The files of `folder` (top level, sorted by name) that enter the identity."""
    return sorted(
        path
        for path in folder.iterdir()
        if path.is_file() and (path.name in CONFIG_FILES or path.name.endswith(WEIGHT_SUFFIXES))
    )


def model_identity(folder: str | Path) -> str:
    """The identity of the model in `folder` (32 hex digits); ValueError when it holds no weight file."""
    folder = Path(folder).expanduser().resolve()
    files = identity_files(folder)
    if not any(path.name.endswith(WEIGHT_SUFFIXES) for path in files):
        raise ValueError(f"{folder}: no weight files (*.safetensors or *.bin); not a model folder")
    cached = _read_stamp(folder)
    entries: dict[str, dict[str, int | str]] = {}
    for path in files:
        stat = path.stat()
        key: dict[str, int | str] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        old = cached.get(path.name)
        if old and all(old.get(k) == v for k, v in key.items()):
            entries[path.name] = old
        else:
            entries[path.name] = {**key, "sha256": _file_digest(path)}
    digest = hashlib.sha256(f"hybrid-inference model identity v{STAMP_VERSION}\n".encode())
    for name, entry in entries.items():
        digest.update(f"{name}\0{entry['size']}\0{entry['sha256']}\n".encode())
    identity = digest.hexdigest()[:IDENTITY_HEX]
    if entries != cached:
        _write_stamp(folder, entries)
    return identity


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while block := stream.read(_READ_BYTES):
            digest.update(block)
    return digest.hexdigest()


def _stamp_paths(folder: Path) -> list[Path]:
    """Beside the files first; in the cache folder (keyed by the folder's path) when that is read-only."""
    from hybrid_workers.engine.demo_model import cache_root

    key = hashlib.sha256(str(folder).encode()).hexdigest()[:16]
    return [folder / STAMP_FILE, cache_root() / "identities" / f"{key}.json"]


def _read_stamp(folder: Path) -> dict[str, dict[str, int | str]]:
    for path in _stamp_paths(folder):
        try:
            stamp = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(stamp, dict) and stamp.get("version") == STAMP_VERSION:
            files = stamp.get("files")
            if isinstance(files, dict):
                return files
    return {}


def _write_stamp(folder: Path, entries: dict[str, dict[str, int | str]]) -> None:
    """Write the stamp atomically (rename); a folder nobody may write to is not an error."""
    body = json.dumps({"version": STAMP_VERSION, "files": entries}, indent=1, sort_keys=True)
    for path in _stamp_paths(folder):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".identity-")
            with os.fdopen(fd, "w") as stream:
                stream.write(body)
            os.replace(tmp, path)
            return
        except OSError:
            continue
