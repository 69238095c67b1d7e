"""Alert rules: promtool accepts them, each alert fires on the series it is about and not on healthy ones."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitoring.alerts import ALERTS, THRESHOLDS, anchor, rule_groups
from monitoring.outputs import ROOT

# Labels a PodMonitor gives one decode worker's series.
WHO = 'namespace="ml", hybridinference="chat", model="m"'
ALERT_LABELS = {"namespace": "ml", "hybridinference": "chat", "model": "m"}


def _promtool(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.slow
def test_promtool_accepts_the_rules_file(promtool: str) -> None:
    result = _promtool(promtool, "check", "rules", str(ROOT / "monitoring/alerts.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


@pytest.mark.slow
def test_promtool_accepts_the_short_for_test_variant(promtool: str, tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rule_groups(for_="5s")))
    result = _promtool(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_promtool_rejects_a_broken_expression(promtool: str, tmp_path: Path) -> None:
    groups = rule_groups()
    groups["groups"][0]["rules"][0]["expr"] += " >"
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(groups))
    assert _promtool(promtool, "check", "rules", str(path)).returncode != 0


def test_every_alert_has_summary_description_and_a_runbook_section(rules: dict[str, Any]) -> None:
    runbooks = (ROOT / "docs/runbooks.md").read_text()
    headings = {line[3:].strip().lower() for line in runbooks.splitlines() if line.startswith("## ")}
    for rule in rules["groups"][0]["rules"]:
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], rule["alert"]
        assert annotations["runbook_url"].endswith("docs/runbooks.md#" + anchor(rule["alert"]))
        assert anchor(rule["alert"]) in headings, f"docs/runbooks.md has no section ## {rule['alert']}"


def test_thresholds_are_filled_into_expressions_and_descriptions() -> None:
    values = {name: str(i + 100) for i, name in enumerate(THRESHOLDS)}
    text = yaml.safe_dump(rule_groups(values))
    for name, value in values.items():
        assert value in text, name
        assert "{" + name + "}" not in text


def _bucket(name: str, le: str, values: str) -> dict[str, str]:
    return {"series": f'hybrid_inference_{name}_bucket{{{WHO}, le="{le}"}}', "values": values}


def _histogram(name: str, edges: tuple[str, ...], hit: str, per_minute: int = 6) -> list[dict[str, str]]:
    """Bucket series of a histogram that gets `per_minute` observations, all in the bucket ending at `hit`."""
    hit_index = edges.index(hit)
    return [_bucket(name, le, f"0+{per_minute if i >= hit_index else 0}x40") for i, le in enumerate(edges)]


# Each case: the alert, the input series, when to look (minutes) and whether it must be firing then.
CASES: list[tuple[str, list[dict[str, str]], int, bool]] = [
    (
        "HybridInferenceTTFTAboveSLO",
        _histogram("time_to_first_token_seconds", ("1", "2.5", "5", "+Inf"), "5"),
        20,
        True,
    ),
    (
        "HybridInferenceTTFTAboveSLO",
        _histogram("time_to_first_token_seconds", ("1", "2.5", "5", "+Inf"), "1"),
        20,
        False,
    ),
    (
        "HybridInferenceDecodeBelowPrediction",
        [
            *_histogram("decode_tokens_per_second", ("5", "10", "50", "+Inf"), "10"),
            {"series": f"hybrid_inference_predicted_decode_tokens_per_second{{{WHO}}}", "values": "40x40"},
        ],
        30,
        True,
    ),
    (
        "HybridInferenceDecodeBelowPrediction",
        [
            *_histogram("decode_tokens_per_second", ("5", "10", "50", "+Inf"), "50"),
            {"series": f"hybrid_inference_predicted_decode_tokens_per_second{{{WHO}}}", "values": "40x40"},
        ],
        30,
        False,
    ),
    (
        "HybridInferenceFallbackRateHigh",
        [
            {"series": f'hybrid_inference_requests_total{{{WHO}, outcome="success"}}', "values": "0+10x40"},
            {
                "series": f'hybrid_inference_prefill_fallback_total{{{WHO}, reason="timeout"}}',
                "values": "0+5x40",
            },
        ],
        15,
        True,
    ),
    (
        "HybridInferenceFallbackRateHigh",
        [
            {"series": f'hybrid_inference_requests_total{{{WHO}, outcome="success"}}', "values": "0+100x40"},
            {
                "series": f'hybrid_inference_prefill_fallback_total{{{WHO}, reason="timeout"}}',
                "values": "0+5x40",
            },
        ],
        15,
        False,
    ),
    (
        "HybridInferencePrefillUnreachable",
        [
            {
                "series": f'hybrid_inference_prefill_fallback_total{{{WHO}, reason="unreachable"}}',
                "values": "0+1x40",
            }
        ],
        10,
        True,
    ),
    (
        "HybridInferencePrefillUnreachable",
        [{"series": 'up{namespace="ml", hybridinference="chat", component="prefill"}', "values": "0x40"}],
        10,
        True,
    ),
    (
        "HybridInferencePrefillUnreachable",
        [{"series": 'up{namespace="ml", hybridinference="chat", component="prefill"}', "values": "1x40"}],
        10,
        False,
    ),
    (
        "HybridInferenceStalled",
        [
            {"series": f"hybrid_inference_requests_waiting{{{WHO}}}", "values": "3x40"},
            {
                "series": f'hybrid_inference_generation_tokens_total{{{WHO}, prefill="local"}}',
                "values": "100x40",
            },
        ],
        15,
        True,
    ),
    (
        "HybridInferenceStalled",
        [
            {"series": f"hybrid_inference_requests_waiting{{{WHO}}}", "values": "3x40"},
            {
                "series": f'hybrid_inference_generation_tokens_total{{{WHO}, prefill="local"}}',
                "values": "0+50x40",
            },
        ],
        15,
        False,
    ),
    (
        "HybridInferenceReconcileErrors",
        [{"series": 'hybrid_inference_reconcile_errors_total{component="operator"}', "values": "0+1x40"}],
        25,
        True,
    ),
    (  # two replicas standing by: nobody reconciles
        "HybridInferenceOperatorLeader",
        [
            {"series": 'hybrid_inference_operator_leader{component="operator", pod="a"}', "values": "0x40"},
            {"series": 'hybrid_inference_operator_leader{component="operator", pod="b"}', "values": "0x40"},
        ],
        10,
        True,
    ),
    (  # a leader and a standby: as it should be
        "HybridInferenceOperatorLeader",
        [
            {"series": 'hybrid_inference_operator_leader{component="operator", pod="a"}', "values": "1x40"},
            {"series": 'hybrid_inference_operator_leader{component="operator", pod="b"}', "values": "0x40"},
        ],
        10,
        False,
    ),
]


def _expected(alert: str, firing: bool, series: list[dict[str, str]]) -> list[dict[str, Any]]:
    """The one alert promtool must see firing: labels of its grouping (those the input has) + severity."""
    if not firing:
        return []
    severity = next(a.severity for a in ALERTS if a.name == alert)
    labels = {k: v for k, v in ALERT_LABELS.items() if all(f'{k}="{v}"' in s["series"] for s in series)}
    return [{"exp_labels": {**labels, "severity": severity}}]


@pytest.mark.slow  # one promtool process per case
@pytest.mark.parametrize(
    ("alert", "series", "minute", "firing"), CASES, ids=[f"{c[0]}-{c[3]}" for c in CASES]
)
def test_alert_fires_exactly_when_its_condition_holds(
    promtool: str, tmp_path: Path, alert: str, series: list[dict[str, str]], minute: int, firing: bool
) -> None:
    groups = copy.deepcopy(rule_groups())
    for rule in groups["groups"][0]["rules"]:
        rule.pop("annotations")  # the alert's identity is its labels; texts are checked elsewhere
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(groups))
    unit = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {
                        "eval_time": f"{minute}m",
                        "alertname": alert,
                        "exp_alerts": _expected(alert, firing, series),
                    }
                ],
            }
        ],
    }
    (tmp_path / "unit.yaml").write_text(yaml.safe_dump(unit))
    result = _promtool(promtool, "test", "rules", str(tmp_path / "unit.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
