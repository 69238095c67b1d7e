"""`hybrid-inference agent --install-launchd`: the plist's contents (loading it needs macOS: untested)."""

from __future__ import annotations

import plistlib
import sys
from pathlib import Path

from hybrid_workers.cli import main
from support.pki import write_tls_dir


def test_install_launchd_writes_a_keep_alive_plist_running_the_agent_with_its_flags(
    tmp_path: Path, capsys
) -> None:
    kubeconfig = tmp_path / "agent.yaml"
    kubeconfig.write_text("{}")
    plist_path, logs = tmp_path / "agent.plist", tmp_path / "logs"
    argv = ["agent", "--install-launchd", "--no-load", "--plist", str(plist_path), "--log-dir", str(logs)]
    argv += ["--name", "mac-studio", "--namespace", "inference,staging", "--kubeconfig", str(kubeconfig)]
    argv += ["--engine", "mlx", "--lease-seconds", "20", "--tls-dir", str(write_tls_dir(tmp_path / "tls"))]
    assert main(argv) == 0
    job = plistlib.loads(plist_path.read_bytes())
    assert job["Label"] == "dev.hybridinference.agent.mac-studio"
    program = job["ProgramArguments"]
    assert program[:4] == [sys.executable, "-m", "hybrid_workers", "agent"]
    flags = dict(zip(program[4::2], program[5::2], strict=True))
    assert flags["--name"] == "mac-studio" and flags["--namespace"] == "inference,staging"
    assert flags["--kubeconfig"] == str(kubeconfig.resolve()) and flags["--engine"] == "mlx"
    assert flags["--lease-seconds"] == "20" and "--install-launchd" not in program
    assert flags["--tls-dir"] == str((tmp_path / "tls").resolve())
    assert job["KeepAlive"] is True and job["RunAtLoad"] is True
    assert job["StandardOutPath"] == str(logs / "dev.hybridinference.agent.mac-studio.out.log")
    assert job["StandardErrorPath"] == str(logs / "dev.hybridinference.agent.mac-studio.err.log")
    assert "launchctl bootstrap" in capsys.readouterr().out


def test_install_launchd_checks_the_flags_like_a_start(tmp_path: Path, capsys) -> None:
    argv = ["agent", "--install-launchd", "--no-load", "--plist", str(tmp_path / "p"), "--name", "Mac Studio"]
    assert main([*argv, "--namespace", "inference"]) == 2
    assert "--name 'Mac Studio': must be a DNS label" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_a_tls_dir_without_the_three_files_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    (tmp_path / "tls").mkdir()
    (tmp_path / "tls" / "ca.crt").write_text("x")
    argv = ["agent", "--install-launchd", "--no-load", "--plist", str(tmp_path / "p"), "--name", "mac"]
    assert main([*argv, "--namespace", "inference", "--tls-dir", str(tmp_path / "tls")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--tls-dir {tmp_path / 'tls'}: no tls.crt, tls.key there" in err[0]
    assert not (tmp_path / "p").exists()
