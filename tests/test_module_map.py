"""The README's module map names every package and every root module of both packages."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("workers/hybrid_workers", "operator/hybrid_operator", "monitoring")
ROOT_MODULES_OF = ("workers/hybrid_workers", "operator/hybrid_operator")


def _module_map() -> str:
    """The README's table that starts at `| path | what lives there |` (up to the first non-row line)."""
    lines = (ROOT / "README.md").read_text().splitlines()
    start = lines.index("| path | what lives there |")
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append(line)
    return "\n".join(table)


def _files(root: str, pattern: str) -> list[Path]:
    """Files under `root` (a path from the repository root) matching the glob, as repository paths."""
    return [path.relative_to(ROOT) for path in (ROOT / root).glob(pattern)]


def test_every_package_has_a_row_in_the_module_map() -> None:
    names = set(re.findall(r"`([^`]+)/`", _module_map()))
    packages = {path.parent for root in PACKAGES for path in _files(root, "**/__init__.py")}
    # A package is named by its full path (`workers/hybrid_workers/engine/`), or a nested one by its
    # path inside its parent package (`kv/proto/`).
    missing = [str(package) for package in sorted(packages) if not _suffixes(package) & names]
    assert missing == [], f"add a row for each to the module map in README.md: {missing}"


def _suffixes(package: Path) -> set[str]:
    parts = package.parts
    return {"/".join(parts[start:]) for start in range(len(parts) - 1)} | {str(package)}


def test_every_root_module_is_named_in_the_module_map() -> None:
    text = _module_map()
    missing = [
        str(path) for root in ROOT_MODULES_OF for path in _files(root, "*.py") if f"`{path.name}`" not in text
    ]
    assert missing == [], f"name each in its package's rows of the module map in README.md: {missing}"
