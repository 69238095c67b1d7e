"""Validate objects against crds/hybridinference.yaml the way the API server does, offline.

Order as in kube-apiserver: apply schema defaults, check the structural schema (jsonschema, with
unknown fields rejected as kubectl's default strict field validation does), then evaluate every
x-kubernetes-validations CEL rule with cel-python (`self` bound to the node the rule sits on).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "hybridinference.yaml"


@cache
def crd() -> dict[str, Any]:
    """The canonical CRD document."""
    document: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text())
    return document


def openapi_schema() -> dict[str, Any]:
    """The served version's openAPIV3Schema."""
    schema: dict[str, Any] = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """`value` with every absent field that has a schema default filled in, recursively."""
    if not isinstance(value, dict):
        if isinstance(value, list) and "items" in schema:
            return [apply_defaults(schema["items"], item) for item in value]
        return value
    result = dict(value)
    for key, sub in schema.get("properties", {}).items():
        if key not in result and "default" in sub:
            result[key] = copy.deepcopy(sub["default"])
        if key in result:
            result[key] = apply_defaults(sub, result[key])
    return result


def _strict(schema: Any) -> Any:
    """Copy of the schema rejecting unknown fields wherever properties are declared."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {key: _strict(value) for key, value in schema.items()}
    if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
        result["additionalProperties"] = False
    return result


def _structural_errors(obj: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft4Validator(_strict(openapi_schema()))
    return [
        f"{'.'.join(str(part) for part in error.absolute_path) or 'object'}: {error.message}"
        for error in validator.iter_errors(obj)
    ]


def _rules(schema: dict[str, Any], value: Any) -> Iterator[tuple[dict[str, Any], Any]]:
    """(rule, value) for every CEL rule on a node present in `value`."""
    for rule in schema.get("x-kubernetes-validations", []):
        yield rule, value
    if isinstance(value, dict):
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                yield from _rules(sub, value[key])
    if isinstance(value, list) and "items" in schema:
        for item in value:
            yield from _rules(schema["items"], item)


def _cel_errors(obj: dict[str, Any]) -> list[str]:
    env = celpy.Environment()
    errors = []
    for rule, value in _rules(openapi_schema(), obj):
        program = env.program(env.compile(rule["rule"]))
        if not bool(program.evaluate({"self": celpy.json_to_cel(value)})):
            errors.append(rule["message"])
    return errors


def validate(obj: dict[str, Any]) -> list[str]:
    """Every error the API server would report for `obj` (empty: accepted)."""
    defaulted = apply_defaults(openapi_schema(), obj)
    structural = _structural_errors(defaulted)
    return structural or _cel_errors(defaulted)
