"""Fixtures of the prefill worker tests: in-process gRPC prefill workers on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.prefill import prefill_server as serving


@pytest.fixture(scope="module")
def prefill_server(tiny_lm) -> Iterator:  # -> RunningServer
    """A prefill worker serving the tiny model (float32) on a free loopback port."""
    with serving(tiny_lm) as running:
        yield running


@pytest.fixture(scope="module")
def prefill_server_bf16(tiny_lm_bf16) -> Iterator:  # -> RunningServer
    """A prefill worker serving the tiny model in bfloat16."""
    with serving(tiny_lm_bf16) as running:
        yield running
