"""Drift detection: when a live child no longer matches what the operator would apply."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hybrid_operator.drift import HASH_ANNOTATION, needs_apply, quantity, stamped

CONTAINER = {"name": "decode", "resources": {"limits": {"memory": "1024Mi", "nvidia.com/gpu": 1}}}
DESIRED: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "x-decode", "namespace": "ns"},
    "spec": {
        "replicas": 1,
        "template": {"spec": {"nodeSelector": {"role": "decode"}, "containers": [CONTAINER]}},
    },
}


def live(desired: dict[str, Any]) -> dict[str, Any]:
    """What the API server returns after applying `desired`: defaults added, quantities canonical."""
    obj = copy.deepcopy(stamped(desired))
    obj["metadata"].update(uid="u", resourceVersion="7", generation=1)
    obj["spec"]["strategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}}
    obj["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] = {
        "memory": "1Gi",
        "nvidia.com/gpu": "1",
    }
    obj["status"] = {"availableReplicas": 1}
    return obj


@pytest.mark.parametrize(
    ("text", "value"),
    [("500m", "0.5"), ("1Gi", "1073741824"), ("2", "2"), (2, "2"), ("1e3", "1000"), ("1.5k", "1500")],
)
def test_quantities_parse_to_their_value(text: object, value: str) -> None:
    assert quantity(text) == quantity(value)


@pytest.mark.parametrize("text", ["abc", "", "1Qi", True, None, 1.5])
def test_non_quantities_are_none(text: object) -> None:
    assert quantity(text) is None


def test_missing_child_needs_apply() -> None:
    assert needs_apply(DESIRED, None)


def test_server_defaults_and_canonical_quantities_are_not_drift() -> None:
    assert not needs_apply(DESIRED, live(DESIRED))


def test_an_edit_by_someone_else_is_drift() -> None:
    edited = live(DESIRED)
    edited["spec"]["replicas"] = 3
    assert needs_apply(DESIRED, edited)


def test_a_removed_field_in_the_desired_spec_is_noticed_by_the_hash() -> None:
    without_selector = copy.deepcopy(DESIRED)
    del without_selector["spec"]["template"]["spec"]["nodeSelector"]
    current = live(DESIRED)  # still has the selector, which the subset check alone would accept
    assert needs_apply(without_selector, current)
    assert (
        stamped(without_selector)["metadata"]["annotations"][HASH_ANNOTATION]
        != (current["metadata"]["annotations"][HASH_ANNOTATION])
    )
