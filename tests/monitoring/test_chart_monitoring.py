"""The chart's monitoring objects, rendered by real Helm: valid, switchable, and the same rules and dashboard.

CRD-based objects are checked against prometheus-operator's API types (the pydantic models that
cloudcoil generates from prometheus-operator's CRDs): required fields and types by validation, unknown
or misspelled fields by a round trip (a field the schema does not know is dropped, so the dump differs).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from cloudcoil.models.prometheus_operator import v1 as prometheus_operator

from monitoring.alerts import THRESHOLDS, rule_groups
from monitoring.dashboard import dashboard
from monitoring.outputs import ROOT

CHART = ROOT / "charts" / "hybrid-inference"
ALL_ON = {
    "dashboards": {"enabled": True},
    "prometheusRule": {"enabled": True},
    "serviceMonitor": {"enabled": True},
}
MODELS = {
    "PrometheusRule": prometheus_operator.PrometheusRule,
    "ServiceMonitor": prometheus_operator.ServiceMonitor,
}


def render(monitoring: dict[str, Any], **values: Any) -> list[dict[str, Any]]:
    """Objects of the chart's monitoring templates for these values (release `hinf`)."""
    rendered = helm.Chart.load(CHART).render(
        {"monitoring": monitoring, **values}, name="hinf", namespace="obs"
    )
    texts = [text for path, text in rendered.items() if "/monitoring-" in path]
    return [doc for text in texts for doc in yaml.safe_load_all(text) if doc]


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def schema_problems(obj: dict[str, Any]) -> list[str]:
    """Why prometheus-operator's API would not take `obj` as written ([] when it would)."""
    model = MODELS[obj["kind"]].model_validate(obj)  # raises on missing fields and wrong types
    dumped = model.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return [] if dumped == obj else [f"{obj['kind']} {obj['metadata']['name']}: fields the schema drops"]


def test_nothing_is_rendered_by_default() -> None:
    assert render({}) == []


def test_each_switch_turns_on_only_its_objects() -> None:
    assert {o["kind"] for o in render({"dashboards": {"enabled": True}})} == {"ConfigMap"}
    assert {o["kind"] for o in render({"prometheusRule": {"enabled": True}})} == {"PrometheusRule"}
    assert {o["kind"] for o in render({"serviceMonitor": {"enabled": True}})} == {"ServiceMonitor"}


def test_crd_based_objects_match_prometheus_operator_types() -> None:
    objects = render(ALL_ON, watchNamespace="inference")
    crd_based = [obj for obj in objects if obj["kind"] in MODELS]
    assert len(crd_based) == 3
    assert [problem for obj in crd_based for problem in schema_problems(obj)] == []


def test_schema_check_catches_a_misspelled_field() -> None:
    monitor = of_kind(render(ALL_ON), "ServiceMonitor")[0]
    monitor["spec"]["endpoints"][0]["intervall"] = monitor["spec"]["endpoints"][0].pop("interval")
    assert schema_problems(monitor) != []


def test_dashboard_configmap_is_valid_and_carries_the_dashboard() -> None:
    values = {**ALL_ON, "dashboards": {"enabled": True, "annotations": {"grafana_folder": "LLM"}}}
    (configmap,) = of_kind(render(values), "ConfigMap")
    kubernetes_validate.validate(configmap, "1.29", strict=True)
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "LLM"}
    assert json.loads(configmap["data"]["hybrid-inference.json"]) == dashboard()


def test_dashboard_label_is_configurable() -> None:
    values = {"dashboards": {"enabled": True, "label": "grafana.com/dashboard", "labelValue": "hinf"}}
    (configmap,) = of_kind(render(values), "ConfigMap")
    assert configmap["metadata"]["labels"]["grafana.com/dashboard"] == "hinf"
    assert "grafana_dashboard" not in configmap["metadata"]["labels"]


def test_default_rules_equal_the_plain_rules_file() -> None:
    (rule,) = of_kind(render(ALL_ON), "PrometheusRule")
    plain = yaml.safe_load((ROOT / "monitoring/alerts.yaml").read_text())
    assert rule["spec"] == plain


@pytest.mark.slow
def test_thresholds_and_runbook_url_come_from_values(promtool: str, tmp_path: Path) -> None:
    thresholds = {"ttftP95SloSeconds": 3.5, "decodeBelowPredictionFactor": 0.5, "fallbackRatio": 0.25}
    base = "https://wiki.example.org/hinf/runbooks"
    rules = {"enabled": True, "thresholds": thresholds, "runbookBaseUrl": base, "labels": {"release": "kps"}}
    (rule,) = of_kind(render({"prometheusRule": rules}), "PrometheusRule")
    by_name = {name: str(thresholds[key]) for name, (_default, key, _doc) in THRESHOLDS.items()}
    assert rule["spec"] == rule_groups(by_name, runbook_base=base)
    assert rule["metadata"]["labels"]["release"] == "kps"
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule["spec"]))
    check = subprocess.run(
        [promtool, "check", "rules", str(tmp_path / "rules.yaml")], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_values_schema_rejects_a_threshold_that_is_not_a_number() -> None:
    with pytest.raises(Exception, match="fallbackRatio"):
        render({"prometheusRule": {"enabled": True, "thresholds": {"fallbackRatio": "high"}}})


def test_worker_monitor_labels_series_as_the_dashboard_expects() -> None:
    monitors = {m["metadata"]["name"]: m["spec"] for m in of_kind(render(ALL_ON), "ServiceMonitor")}
    workers = monitors["hinf-hybrid-inference-workers"]
    assert workers["namespaceSelector"] == {"any": True}
    assert {e["port"] for e in workers["endpoints"]} == {"metrics", "http"}  # prefill, decode Services
    for endpoint in workers["endpoints"]:
        targets = {r["targetLabel"]: r["sourceLabels"][0] for r in endpoint["relabelings"]}
        assert targets == {
            "hybridinference": "__meta_kubernetes_pod_label_app_kubernetes_io_instance",
            "component": "__meta_kubernetes_pod_label_app_kubernetes_io_component",
        }
    operator = monitors["hinf-hybrid-inference-operator"]["endpoints"][0]["relabelings"]
    assert operator == [{"targetLabel": "component", "replacement": "operator"}]


def test_worker_monitor_can_be_left_to_the_resources() -> None:
    monitors = of_kind(render({"serviceMonitor": {"enabled": True, "workers": False}}), "ServiceMonitor")
    assert [m["metadata"]["name"] for m in monitors] == ["hinf-hybrid-inference-operator"]


def test_helm_lint_finds_no_warning_with_monitoring_on() -> None:
    report = helm.lint(CHART, values={"monitoring": ALL_ON}, strict=True, namespace="obs")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_per_resource_monitor_of_the_operator_relabels_like_the_charts() -> None:
    # A user who turns on spec.metrics.serviceMonitor instead of the chart's monitor must get the
    # same target labels, or the dashboard's variables find nothing.
    from hybrid_operator.render_network import SCRAPE_RELABELINGS

    chart = {m["metadata"]["name"]: m["spec"] for m in of_kind(render(ALL_ON), "ServiceMonitor")}
    for endpoint in chart["hinf-hybrid-inference-workers"]["endpoints"]:
        assert endpoint["relabelings"] == SCRAPE_RELABELINGS
