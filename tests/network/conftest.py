"""The network tests need root and iproute2 (`netns_link.skip_reason`): skipped, with the reason, without."""

from __future__ import annotations

import pytest
from netns_link import skip_reason


@pytest.fixture(autouse=True)
def _network_namespaces() -> None:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
