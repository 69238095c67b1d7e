"""Test helpers for manifests: the Kubernetes versions we support, and the chart rendered by real Helm."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import yaml
from crd_schema import ROOT

# Kubernetes versions the operator supports (gRPC probes are GA from 1.27; k3s stable is in range).
SUPPORTED_VERSIONS = ("1.29", "1.30", "1.31", "1.32", "1.33", "1.34", "1.35")
CHART = ROOT / "charts" / "hybrid-inference"


def render_chart(values: dict[str, Any]) -> dict[str, str]:
    """template path -> rendered text, as `helm template hinf charts/hybrid-inference` prints it."""
    return helm.Chart.load(CHART).render(values, name="hinf", namespace="hybrid-inference-system")


def chart_objects(rendered: dict[str, str]) -> list[dict[str, Any]]:
    """Every object in the rendered YAML templates, in template path order."""
    docs = []
    for path, text in sorted(rendered.items()):
        if path.endswith(".yaml"):
            docs.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return docs
