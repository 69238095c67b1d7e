"""Fixtures: decode workers serving the tiny model over real HTTP (uvicorn on a free loopback port)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from decode_servers import ForwardGate, RunningServer, _ServerThread, start_server, stop_server


@pytest.fixture
def decode_server(tiny_lm: Any) -> Iterator[Callable[..., RunningServer]]:
    """Factory: start a decode worker for the tiny model with DecodeConfig overrides (and a peer)."""
    yield from _server_factory(tiny_lm)


@pytest.fixture(scope="module")
def module_decode_server(tiny_lm: Any) -> Iterator[Callable[..., RunningServer]]:
    """Like decode_server, but the servers live for the whole test module."""
    yield from _server_factory(tiny_lm)


def _server_factory(lm: Any) -> Iterator[Callable[..., RunningServer]]:
    """Yield a starter of decode workers for `lm`; stop every server it started afterwards."""
    started: list[tuple[RunningServer, _ServerThread]] = []

    def start(peer: Any = None, **overrides: Any) -> RunningServer:
        started.append(start_server(lm, peer, **overrides))
        return started[-1][0]

    yield start
    for running, thread in started:
        stop_server(running, thread)


@pytest.fixture(scope="session")
def prefill_lm(tiny_model_dir: Any) -> Any:
    """A second copy of the tiny model for in-process prefill workers (in production they are separate
    processes; a separate model object keeps the two workers' forward passes apart here too)."""
    from hybrid_workers.engine import load_model

    return load_model(str(tiny_model_dir), device="cpu", dtype="float32", progress=False)


def _gate(lm: Any) -> Iterator[ForwardGate]:
    gate = ForwardGate()
    handle = lm.model.model.layers[0].register_forward_pre_hook(gate)
    yield gate
    gate.open()
    handle.remove()


@pytest.fixture
def forward_gate(tiny_lm: Any) -> Iterator[ForwardGate]:
    """A ForwardGate on the decode side's model (tiny_lm), removed (and opened) after the test."""
    yield from _gate(tiny_lm)


@pytest.fixture
def prefill_gate(prefill_lm: Any) -> Iterator[ForwardGate]:
    """A ForwardGate on the in-process prefill workers' model (prefill_lm)."""
    yield from _gate(prefill_lm)
