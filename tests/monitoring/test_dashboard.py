"""The generated Grafana dashboard: checked-in copies current, shape Grafana accepts, PromQL that parses."""

from __future__ import annotations

import json
from typing import Any

import promql_parser
import pytest

from monitoring.outputs import OUTPUTS, ROOT, dashboard_json, stale
from monitoring.queries import expand, metric_names, panel_queries

ROWS = ["Latency", "Throughput", "KV transfer", "Health", "Plan vs reality"]


def test_checked_in_outputs_match_the_generator() -> None:
    assert stale() == [], "run `python -m monitoring` and commit the result"


def test_stale_detects_a_hand_edited_copy(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    relative = "monitoring/grafana/hybrid-inference.json"
    (tmp_path / relative).parent.mkdir(parents=True)
    (tmp_path / relative).write_text(dashboard_json().replace("Time to first token", "TTFT"))
    monkeypatch.setattr("monitoring.outputs.ROOT", tmp_path)
    monkeypatch.setattr("monitoring.outputs.OUTPUTS", {relative: OUTPUTS[relative]})
    assert stale() == [relative]


def test_chart_copy_of_the_dashboard_is_identical() -> None:
    original = (ROOT / "monitoring/grafana/hybrid-inference.json").read_text()
    copy = ROOT / "charts/hybrid-inference/files/dashboards/hybrid-inference.json"
    if not copy.parent.parent.parent.is_dir():
        pytest.skip("the Helm chart is not in this tree yet")
    assert copy.read_text() == original


def test_dashboard_has_the_rows_in_order(dashboard_json: dict[str, Any]) -> None:
    rows = [panel["title"] for panel in dashboard_json["panels"] if panel["type"] == "row"]
    assert rows == ROWS
    assert dashboard_json["schemaVersion"] >= 36


def test_dashboard_has_namespace_instance_and_model_variables(dashboard_json: dict[str, Any]) -> None:
    names = [variable["name"] for variable in dashboard_json["templating"]["list"]]
    assert names == ["datasource", "namespace", "instance", "model"]


def test_panel_ids_are_unique_and_grid_cells_do_not_overlap(dashboard_json: dict[str, Any]) -> None:
    panels = dashboard_json["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    taken: dict[tuple[int, int], str] = {}
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]


def test_every_panel_has_a_description_and_queries(dashboard_json: dict[str, Any]) -> None:
    for panel in dashboard_json["panels"]:
        if panel["type"] != "row":
            assert panel["description"] and panel["targets"], panel["title"]


def test_every_query_parses_once_variables_are_filled(dashboard_json: dict[str, Any]) -> None:
    for query in panel_queries(dashboard_json):
        assert "$" not in expand(query.expr), query.origin
        promql_parser.parse(expand(query.expr))  # raises ValueError naming the problem


def test_a_broken_query_does_not_parse() -> None:
    with pytest.raises(ValueError):
        promql_parser.parse(
            expand('sum(rate(hybrid_inference_requests_total{model=~"$model"}[$__rate_interval])')
        )


def test_worker_queries_are_filtered_by_every_variable(dashboard_json: dict[str, Any]) -> None:
    for query in panel_queries(dashboard_json):
        names = metric_names(expand(query.expr))
        if any("reconcile" in name for name in names):
            assert 'component="operator"' in query.expr, query.origin  # the operator serves no model
            continue
        for variable in ("$namespace", "$instance", "$model"):
            assert query.expr.count(variable) >= query.expr.count("hybrid_inference_"), query.origin


def test_dashboard_json_is_what_grafana_imports(dashboard_json: dict[str, Any]) -> None:
    text = (ROOT / "monitoring/grafana/hybrid-inference.json").read_text()
    assert json.loads(text) == dashboard_json


def test_every_panel_is_explained_in_the_docs(dashboard_json: dict[str, Any]) -> None:
    docs = (ROOT / "docs/monitoring.md").read_text()
    headings = {line[4:].strip() for line in docs.splitlines() if line.startswith("### ")}
    missing = [panel["title"] for panel in dashboard_json["panels"] if panel["type"] != "row"]
    assert [title for title in missing if title not in headings] == []
