"""The CRD, the chart's rendered templates and the examples load with a duplicate-key-strict parser."""

from __future__ import annotations

import pytest
from crd_schema import CRD_PATH, ROOT
from helm_render import CHART, render_chart
from strict_yaml import DuplicateKeyError, strict_load_all


def test_strict_loader_refuses_a_duplicate_key_but_accepts_merge_keys() -> None:
    with pytest.raises(DuplicateKeyError, match="'b' on lines 2 and 3"):
        strict_load_all("a: 1\nb: 2\nb: 3\n")
    merged = strict_load_all("base: &x {k: 1, v: 2}\nchild:\n  <<: *x\n  v: 3\n")[0]
    assert merged["child"] == {"k": 1, "v": 3}


def test_crd_and_its_chart_copy_have_no_duplicate_keys() -> None:
    for path in (CRD_PATH, CHART / "crds" / "hybridinference.yaml"):
        assert strict_load_all(path.read_text())[0]["kind"] == "CustomResourceDefinition"


@pytest.mark.parametrize(
    "values",
    [{}, {"watchNamespace": "inference", "example": {"enabled": True}}],
    ids=["default", "namespaced-example"],
)
def test_rendered_chart_templates_have_no_duplicate_keys(values: dict[str, object]) -> None:
    for path, text in render_chart(values).items():
        if path.endswith(".yaml"):
            strict_load_all(text)


def test_examples_have_no_duplicate_keys() -> None:
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        strict_load_all(path.read_text())
