"""`hybrid-inference operator`: flag checks, the kopf command line it builds, light imports."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hybrid_workers.cli import build_parser, main
from hybrid_workers.cli.operator_cmd import kopf_arguments


def parse(*argv: str) -> object:
    return build_parser().parse_args(["operator", *argv])


def test_namespace_scope_becomes_kopf_namespace_and_liveness() -> None:
    args = parse("--namespace", "inference", "--liveness", "http://0.0.0.0:8081/healthz")
    assert kopf_arguments(args) == [  # type: ignore[arg-type]
        "run", "-m", "hybrid_operator", "--standalone", "--namespace", "inference",
        "--liveness", "http://0.0.0.0:8081/healthz",
    ]  # fmt: skip


def test_all_namespaces_from_its_environment_mirror(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYBRID_INFERENCE_ALL_NAMESPACES", "true")
    assert "--all-namespaces" in kopf_arguments(parse())  # type: ignore[arg-type]


@pytest.mark.parametrize("argv", [(), ("--namespace", "a", "--all-namespaces")])
def test_scope_must_be_exactly_one(argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["operator", *argv]) == 2
    assert "choose exactly one of --namespace NS and --all-namespaces" in capsys.readouterr().err


@pytest.mark.slow
def test_command_line_loads_without_importing_kopf_or_torch() -> None:
    code = (
        "import sys; from hybrid_workers.cli import build_parser; build_parser(); "
        "print(sorted({'kopf', 'torch'} & set(sys.modules)))"
    )
    assert run_python(code) == "[]"


@pytest.mark.slow
def test_planner_imports_where_kopf_is_not_installed() -> None:
    code = (
        "import sys; sys.modules['kopf'] = None; import hybrid_operator.planner, hybrid_operator; "
        "print(hasattr(hybrid_operator, 'handlers'))"
    )
    assert run_python(code) == "False"


@pytest.mark.slow
def test_the_whole_operator_runs_without_torch_or_grpc() -> None:
    # The operator image installs no torch: everything kopf loads must work with torch unimportable.
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['grpc'] = None; "
        "import hybrid_operator.handlers, hybrid_operator.reconcile, hybrid_operator.render; "
        "print('ok')"
    )
    assert run_python(code) == "ok"


def run_python(code: str) -> str:
    """Run `code` in a fresh interpreter (clean sys.modules); its stripped stdout. Fails on non-zero exit."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--all-namespaces", "--leader-election"), "needs --leader-election-namespace NS"),
        (
            ("--namespace", "a", "--leader-election", "--renew-deadline-seconds", "20"),
            "--renew-deadline-seconds 20, --lease-duration-seconds 15: need 1 ≤ retry period",
        ),
    ],
)
def test_leader_election_settings_that_cannot_work_are_refused_in_one_line(
    argv: tuple[str, ...], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["operator", *argv]) == 2
    assert message in capsys.readouterr().err


def test_leader_election_settings_reach_the_operator_through_their_environment_mirrors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from hybrid_operator.leadership import election_from_env
    from hybrid_workers.cli.operator_cmd import export_settings

    environment = {k: v for k, v in os.environ.items() if not k.startswith("HYBRID_INFERENCE_")}
    monkeypatch.setattr(os, "environ", environment)  # export_settings writes here, not into the real one
    assert election_from_env() is None
    args = parse(
        "--namespace", "team", "--leader-election", "--lease-name", "op", "--lease-duration-seconds", "30"
    )
    environment["POD_NAME"] = "operator-7f9c"
    export_settings(args)  # type: ignore[arg-type]
    election = election_from_env()
    assert election is not None
    assert (election.namespace, election.name, election.lease_duration_s) == ("team", "op", 30)
    assert election.identity.startswith("operator-7f9c_")
