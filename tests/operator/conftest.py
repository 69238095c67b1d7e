"""Fixtures of the operator tests: an emulated cluster with one Ready node (a module may define its own
`cluster`), and a KubeClient logged in to whichever `cluster` the module uses."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import kopf
import pytest
from emulated_cluster import EmulatedCluster
from hybrid_operator.kube import KubeClient


@pytest.fixture(scope="module")
def cluster() -> Iterator[EmulatedCluster]:
    """kmock's API server with the CRD installed and one Ready Node, `n1`."""
    emulated = EmulatedCluster().start()
    emulated.add_ready_node("n1")
    yield emulated
    emulated.stop()


@pytest.fixture
async def client(cluster: EmulatedCluster) -> AsyncIterator[KubeClient]:
    """The operator's own API client, logged in to `cluster` (the requesting module defines `cluster`)."""
    info = kopf.ConnectionInfo(server=cluster.url)
    kube = KubeClient(info, "hybrid-inference-operator", relogin=lambda: info)
    yield kube
    await kube.close()
