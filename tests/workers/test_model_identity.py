"""The model identity: every weight byte counts, the folder's place and file times do not; cached beside."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hybrid_workers import model_identity as identity_module
from hybrid_workers.model_identity import STAMP_FILE, model_identity
from support.models import one_element_changed


def test_a_copy_elsewhere_has_the_same_identity_and_one_changed_weight_another(tiny_model_dir, tmp_path):
    original = model_identity(tiny_model_dir)
    copy = shutil.copytree(tiny_model_dir, tmp_path / "copy", ignore=shutil.ignore_patterns(STAMP_FILE))
    assert model_identity(copy) == original
    changed = one_element_changed(tiny_model_dir, tmp_path / "changed")
    assert model_identity(changed) != original


def test_files_that_do_not_change_the_kv_are_not_part_of_it(tiny_model_dir, tmp_path):
    copy = shutil.copytree(tiny_model_dir, tmp_path / "copy")
    before = model_identity(copy)
    (copy / "README.md").write_text("notes")
    (copy / "generation_config.json").write_text("{}")
    assert model_identity(copy) == before
    (copy / "tokenizer_config.json").write_text("{}")  # how text maps to token ids: it counts
    assert model_identity(copy) != before


def test_the_digest_is_cached_beside_the_files_and_renewed_when_a_file_changes(
    tiny_model_dir, tmp_path, monkeypatch
):
    copy = shutil.copytree(tiny_model_dir, tmp_path / "copy")
    first = model_identity(copy)
    assert (copy / STAMP_FILE).is_file()

    def no_hashing(path: Path) -> str:
        raise AssertionError(f"{path.name} was hashed again although it did not change")

    monkeypatch.setattr(identity_module, "_file_digest", no_hashing)
    assert model_identity(copy) == first  # from the stamp: no file read
    weights = copy / "model.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    with pytest.raises(AssertionError, match=r"model\.safetensors was hashed again"):
        model_identity(copy)  # a newer file is hashed again (and only it)


def test_a_folder_without_weights_has_no_identity(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="no weight files"):
        model_identity(tmp_path)
