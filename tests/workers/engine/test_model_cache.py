"""The model cache: a folder is written once, stamped last, reused while its stamp matches, else redone."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from hybrid_workers.engine.model_cache import STAMP_FILE, cached_folder

STAMP = {"model": "m", "converter": 2}


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("HYBRID_INFERENCE_CACHE_DIR", str(tmp_path))
    return tmp_path


class Writer:
    """Writes one file and counts its calls; `fail` makes it raise after writing (an interrupted write)."""

    def __init__(self, fail: bool = False) -> None:
        self.calls = 0
        self.fail = fail

    def __call__(self, folder: Path) -> None:
        self.calls += 1
        (folder / "weights.bin").write_bytes(b"w" * 10)
        if self.fail:
            raise RuntimeError("interrupted")


def test_a_folder_is_written_once_stamped_and_then_reused(cache):
    writer = Writer()
    path = cached_folder("m", STAMP, writer)
    assert path == cache / "m"
    assert json.loads((path / STAMP_FILE).read_text()) == STAMP
    assert cached_folder("m", STAMP, writer) == path
    assert writer.calls == 1


def test_a_stale_stamp_makes_the_folder_rewritten(cache):
    old = cache / "m"
    old.mkdir()
    (old / "leftover").write_text("from an older converter")
    (old / STAMP_FILE).write_text(json.dumps({**STAMP, "converter": 1}))
    writer = Writer()
    path = cached_folder("m", STAMP, writer)
    assert writer.calls == 1
    assert sorted(p.name for p in path.iterdir()) == [STAMP_FILE, "weights.bin"]


def test_an_interrupted_write_leaves_nothing_that_passes_for_complete(cache):
    with pytest.raises(RuntimeError, match="interrupted"):
        cached_folder("m", STAMP, Writer(fail=True))
    assert sorted(p.name for p in cache.iterdir()) == [".m.lock"]  # no folder, no staging left
    writer = Writer()
    cached_folder("m", STAMP, writer)
    assert writer.calls == 1


def test_concurrent_first_use_writes_once(cache):
    writer = Writer()
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(cached_folder("m", STAMP, writer))) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [cache / "m"] * 4
    assert writer.calls == 1
