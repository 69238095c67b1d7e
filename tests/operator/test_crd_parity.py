"""The CRD schema (with its CEL rules) and the pydantic models give the same verdict on every sample."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from crd_schema import ROOT, apply_defaults, crd, openapi_schema, validate
from helm_render import SUPPORTED_VERSIONS
from hybrid_operator.models import parse
from hybrid_operator.reconcile import describe_errors
from pydantic import ValidationError

DATA = ROOT / "tests" / "data" / "hybridinference"
VALID = sorted((DATA / "valid").glob("*.yaml")) + sorted((ROOT / "examples").glob("*.yaml"))
INVALID = sorted((DATA / "invalid").glob("*.yaml"))


def load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    return document


def expected_message(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name}: first line must be '# expect: <text>'"
    return first.removeprefix("# expect: ")


def pydantic_errors(obj: dict[str, Any]) -> str | None:
    try:
        parse(obj)
    except ValidationError as exc:
        return describe_errors(exc)
    return None


def test_there_are_samples_of_both_kinds() -> None:
    assert len(VALID) >= 6 and len(INVALID) >= 10


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_sample_is_accepted_by_crd_and_models(path: Path) -> None:
    obj = load(path)
    assert validate(obj) == []
    assert pydantic_errors(obj) is None


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_sample_is_rejected_by_both_with_the_same_reason(path: Path) -> None:
    obj, expected = load(path), expected_message(path)
    crd_errors = validate(obj)
    model_errors = pydantic_errors(obj)
    assert crd_errors, f"the CRD accepted {path.name}"
    assert model_errors, f"the models accepted {path.name}"
    assert any(expected in error for error in crd_errors), crd_errors
    assert expected in model_errors


def prune_empty(value: Any) -> Any:
    """Drop empty lists and maps (in Kubernetes an empty collection and an absent field mean the same)."""
    if isinstance(value, dict):
        pruned = {key: prune_empty(sub) for key, sub in value.items()}
        return {key: sub for key, sub in pruned.items() if sub not in ({}, [])}
    return value


def test_crd_defaults_equal_model_defaults() -> None:
    """What the API server fills in is what the operator assumes when a field is absent."""
    obj = {"apiVersion": "hybridinference.dev/v1alpha1", "kind": "HybridInference", "metadata": {"name": "d"}}
    defaulted = apply_defaults(openapi_schema(), {**obj, "spec": {}})
    from_models = parse({**obj, "spec": {}}).spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    assert prune_empty(defaulted["spec"]) == prune_empty(from_models)


def _fields(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = []
    for key, sub in schema.get("properties", {}).items():
        found.append((f"{path}.{key}".lstrip("."), sub))
        found.extend(_fields(sub, f"{path}.{key}"))
        if "items" in sub:
            found.extend(_fields(sub["items"], f"{path}.{key}[]"))
    return found


def test_every_crd_field_has_a_description() -> None:
    missing = [
        name for name, sub in _fields(openapi_schema()) if not sub.get("description") and name != "metadata"
    ]
    assert missing == []


def test_printer_columns_point_at_status_fields_that_exist() -> None:
    status_fields = {f".status.{name}" for name, _ in _fields(openapi_schema()["properties"]["status"])}
    columns = crd()["spec"]["versions"][0]["additionalPrinterColumns"]
    paths = [c["jsonPath"] for c in columns if c["jsonPath"].startswith(".status")]
    assert [p for p in paths if p not in status_fields] == []
    names = ["Phase", "Prefill node", "Decode node", "TTFT", "TPS", "Agent", "Age"]
    assert [c["name"] for c in columns] == names


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_crd_is_a_valid_customresourcedefinition(version: str) -> None:
    kubernetes_validate.validate(crd(), version, strict=True)


def _nodes(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path or "<root>", schema)]
    for key, sub in schema.get("properties", {}).items():
        found.extend(_nodes(sub, f"{path}.{key}"))
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            found.extend(_nodes(schema[key], f"{path}[{key}]"))
    return found


def test_crd_schema_is_structural() -> None:
    """The rules kube-apiserver enforces on CRD schemas (structural schema, apiextensions v1)."""
    problems = []
    for path, node in _nodes(openapi_schema()):
        typed = (
            "type" in node
            or node.get("x-kubernetes-int-or-string")
            or node.get("x-kubernetes-preserve-unknown-fields")
        )
        if not typed:
            problems.append(f"{path}: no type")
        if "properties" in node and "additionalProperties" in node:
            problems.append(f"{path}: properties and additionalProperties together")
        if node.get("x-kubernetes-int-or-string") and node.get("anyOf") not in (
            None,
            [{"type": "integer"}, {"type": "string"}],
        ):
            problems.append(f"{path}: int-or-string anyOf must be exactly integer|string")
    assert problems == []


def test_crd_defaults_pass_their_own_schema() -> None:
    """kube-apiserver rejects a CRD whose defaults (after defaulting) fail validation."""
    for path, node in _nodes(openapi_schema()):
        if "default" in node:
            value = apply_defaults(node, node["default"])
            errors = list(jsonschema.Draft4Validator(node).iter_errors(value))
            assert errors == [], f"{path}: default {node['default']!r}: {errors[0].message}"
