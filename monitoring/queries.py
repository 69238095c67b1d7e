"""Every PromQL query the dashboard and the alert rules run, ready to send to Prometheus as is.

Grafana fills the dashboard's `$variables` before it queries; `expand()` does the same with the
values of an "All" selection, so tests can run the very queries a user's Grafana would run, and
`metric_names()` lists the metrics a query reads so none can be misspelled.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import promql_parser

# What Grafana substitutes for "All" on a multi-value regex variable, and a typical rate window.
ALL_VALUES: Mapping[str, str] = {"namespace": ".*", "instance": ".*", "model": ".*"}
RATE_INTERVAL = "1m"
_LABEL_VALUES = re.compile(r"^label_values\((?:(?P<selector>.+),\s*)?(?P<label>\w+)\)$")


@dataclass(frozen=True)
class NamedQuery:
    """A query and where it comes from (`panel title / legend`, `variable name`, or alert name)."""

    origin: str
    expr: str


def expand(expr: str, values: Mapping[str, str] = ALL_VALUES, rate_interval: str = RATE_INTERVAL) -> str:
    """`expr` with Grafana's `$__rate_interval` and template variables (`$name`, `${name}`) filled in."""
    expr = expr.replace("$__rate_interval", rate_interval)
    for name, value in values.items():
        expr = expr.replace("${" + name + "}", value).replace("$" + name, value)
    return expr


def panel_queries(dashboard: Mapping[str, Any]) -> Iterator[NamedQuery]:
    """Each panel target's expression, variables still in place."""
    for panel in dashboard["panels"]:
        for target in panel.get("targets", ()):
            yield NamedQuery(f"{panel['title']} / {target['legendFormat']}", target["expr"])


def variable_selectors(dashboard: Mapping[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(variable name, series selector, label) of each `label_values(selector, label)` variable."""
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = _LABEL_VALUES.match(variable["query"]["query"])
        if match is None:
            raise ValueError(f"variable {variable['name']}: unsupported query {variable['query']['query']!r}")
        yield variable["name"], match["selector"] or "", match["label"]


def alert_queries(groups: Mapping[str, Any]) -> Iterator[NamedQuery]:
    """Each alerting rule's expression from a rules document (`{"groups": [...]}`)."""
    for group in groups["groups"]:
        for rule in group["rules"]:
            yield NamedQuery(rule["alert"], rule["expr"])


def metric_names(expr: str) -> set[str]:
    """Names of the metrics an (expanded) PromQL expression reads; raises ValueError if it does not parse."""
    names: set[str] = set()

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names
