"""Fixtures of the prefill worker tests: in-process gRPC prefill workers on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="module")
def prefill_server(tiny_lm) -> Iterator:  # -> RunningServer
    """A prefill worker serving the tiny model (float32) on a free loopback port."""
    from hybrid_workers.prefill.config import PrefillServerConfig
    from hybrid_workers.prefill.server import start_server

    running = start_server(tiny_lm, PrefillServerConfig(host="127.0.0.1", port=0))
    yield running
    running.stop(grace_s=0)


@pytest.fixture(scope="module")
def prefill_server_bf16(tiny_lm_bf16) -> Iterator:  # -> RunningServer
    """A prefill worker serving the tiny model in bfloat16."""
    from hybrid_workers.prefill.config import PrefillServerConfig
    from hybrid_workers.prefill.server import start_server

    running = start_server(tiny_lm_bf16, PrefillServerConfig(host="127.0.0.1", port=0))
    yield running
    running.stop(grace_s=0)
