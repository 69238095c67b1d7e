"""Grafana JSON building blocks: query targets, time-series and heatmap panels, rows and their layout.

Panels are described by small frozen dataclasses; `layout()` turns rows of them into the dashboard's
`panels` list (row headers plus panels, with ids and grid positions), Grafana schema 39.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
GRID_WIDTH = 24  # Grafana's grid is 24 columns wide
PANEL_HEIGHT = 8


@dataclass(frozen=True)
class Query:
    """One PromQL query of a panel and the legend of each series it returns."""

    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    """A graph: `kind` is `timeseries` or `heatmap`; `unit` is a Grafana unit id (s, Bps, reqps, ...)."""

    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: str = "timeseries"
    width: int = 8  # columns out of 24


@dataclass(frozen=True)
class Row:
    """A titled row of panels."""

    title: str
    panels: tuple[Panel, ...] = field(default_factory=tuple)


def _target(query: Query, ref: int, kind: str) -> dict[str, Any]:
    target: dict[str, Any] = {
        "datasource": DATASOURCE,
        "expr": query.expr,
        "legendFormat": query.legend,
        "refId": chr(ord("A") + ref),
        "range": True,
    }
    if kind == "heatmap":
        target["format"] = "heatmap"
    return target


def _field_config(panel: Panel) -> dict[str, Any]:
    custom: dict[str, Any] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "spanNulls": False}
    if panel.kind == "heatmap":
        custom = {}
    return {"defaults": {"unit": panel.unit, "custom": custom}, "overrides": []}


def _options(panel: Panel) -> dict[str, Any]:
    if panel.kind == "heatmap":
        return {
            "calculate": False,  # the buckets come from Prometheus already
            "yAxis": {"unit": panel.unit},
            "color": {"mode": "scheme", "scheme": "Oranges"},
            "cellGap": 1,
            "tooltip": {"mode": "single", "yHistogram": True},
        }
    return {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}}


def panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    """The Grafana JSON of one panel placed at grid column `x`, row `y`."""
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": PANEL_HEIGHT, "w": panel.width, "x": x, "y": y},
        "targets": [_target(q, i, panel.kind) for i, q in enumerate(panel.queries)],
        "fieldConfig": _field_config(panel),
        "options": _options(panel),
    }


def layout(rows: tuple[Row, ...]) -> list[dict[str, Any]]:
    """Row headers and panels in reading order, left to right, wrapping at 24 columns."""
    out: list[dict[str, Any]] = []
    y = 0
    for row in rows:
        out.append(_row_json(row, len(out) + 1, y))
        y += 1
        x = 0
        for panel in row.panels:
            if x + panel.width > GRID_WIDTH:
                x, y = 0, y + PANEL_HEIGHT
            out.append(panel_json(panel, len(out) + 1, x, y))
            x += panel.width
        y += PANEL_HEIGHT
    return out


def _row_json(row: Row, panel_id: int, y: int) -> dict[str, Any]:
    return {
        "id": panel_id,
        "type": "row",
        "title": row.title,
        "collapsed": False,
        "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": y},
        "panels": [],
    }
