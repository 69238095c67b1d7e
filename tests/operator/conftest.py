"""Fixtures of the operator tests: a KubeClient on the module's emulated cluster (its `cluster` fixture)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import kopf
import pytest
from emulated_cluster import EmulatedCluster
from hybrid_operator.kube import KubeClient


@pytest.fixture
async def client(cluster: EmulatedCluster) -> AsyncIterator[KubeClient]:
    """The operator's own API client, logged in to `cluster` (the requesting module defines `cluster`)."""
    info = kopf.ConnectionInfo(server=cluster.url)
    kube = KubeClient(info, "hybrid-inference-operator", relogin=lambda: info)
    yield kube
    await kube.close()
