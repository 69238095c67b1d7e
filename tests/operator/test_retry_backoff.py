"""Temporary API errors are retried with a growing delay; permanent rejections are classified as such."""

from __future__ import annotations

import pytest
from hybrid_operator.apply import is_permanent
from hybrid_operator.handlers import backoff_seconds
from hybrid_operator.kube import KubeError


def test_backoff_doubles_from_five_seconds_up_to_five_minutes() -> None:
    assert [backoff_seconds(n) for n in range(8)] == [5, 10, 20, 40, 80, 160, 300, 300]
    assert backoff_seconds(10_000) == 300


@pytest.mark.parametrize(
    ("status", "permanent"),
    [(422, True), (400, True), (409, False), (429, False), (500, False), (503, False)],
)
def test_only_invalid_and_bad_request_are_permanent(status: int, permanent: bool) -> None:
    body = '{"kind": "Status", "message": "spec.x: Invalid value"}'
    error = KubeError(status, "PATCH", "/apis/apps/v1/namespaces/n/deployments/d", body)
    assert is_permanent(error) is permanent
    assert error.detail == "spec.x: Invalid value"
