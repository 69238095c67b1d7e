"""Fixtures: decode workers serving the tiny model over real HTTP (uvicorn on a free loopback port)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from decode_servers import ForwardGate, RunningServer, _ServerThread, start_server, stop_server


@pytest.fixture
def decode_server(tiny_lm: Any) -> Iterator[Callable[..., RunningServer]]:
    """Factory: start a decode worker for the tiny model with DecodeConfig overrides (and a peer)."""
    started: list[tuple[RunningServer, _ServerThread]] = []

    def start(peer: Any = None, **overrides: Any) -> RunningServer:
        started.append(start_server(tiny_lm, peer, **overrides))
        return started[-1][0]

    yield start
    for running, thread in started:
        stop_server(running, thread)


@pytest.fixture(scope="module")
def module_decode_server(tiny_lm: Any) -> Iterator[Callable[..., RunningServer]]:
    """Like decode_server, but the servers live for the whole test module."""
    started: list[tuple[RunningServer, _ServerThread]] = []

    def start(peer: Any = None, **overrides: Any) -> RunningServer:
        started.append(start_server(tiny_lm, peer, **overrides))
        return started[-1][0]

    yield start
    for running, thread in started:
        stop_server(running, thread)


@pytest.fixture
def forward_gate(tiny_lm: Any) -> Iterator[ForwardGate]:
    """A ForwardGate on the tiny model's first decoder layer, removed (and opened) after the test."""
    gate = ForwardGate()
    handle = tiny_lm.model.model.layers[0].register_forward_pre_hook(gate)
    yield gate
    gate.open()
    handle.remove()
