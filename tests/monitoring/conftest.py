"""Fixtures of the monitoring tests: the generated dashboard and rules, and the Prometheus tools."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `monitoring/` is a top-level folder, not an installed package
    sys.path.insert(0, str(ROOT))

from monitoring.alerts import rule_groups  # noqa: E402
from monitoring.dashboard import dashboard  # noqa: E402


@pytest.fixture(scope="session")
def dashboard_json() -> dict[str, Any]:
    """The dashboard as the generator builds it."""
    return dashboard()


@pytest.fixture(scope="session")
def rules() -> dict[str, Any]:
    """The alert rules with default thresholds (the plain rules file's content)."""
    return rule_groups()


@pytest.fixture(scope="session")
def promtool() -> str:
    """Path of promtool (Debian package `prometheus`, installed by `make system-deps`)."""
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not found: install the Debian package `prometheus` (make system-deps)")
    return path
