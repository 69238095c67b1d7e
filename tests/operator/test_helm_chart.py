"""The Helm chart rendered by real Helm (helm-python-sdk: Helm v4's Go code, offline) for several values.

Golden outputs live in tests/operator/chart_golden/; after an intended chart change, regenerate with
    HYBRID_REGEN_GOLDEN=1 .venv/bin/python -m pytest tests/operator/test_helm_chart.py -q
and review the diff.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from crd_schema import CRD_PATH, validate
from helm_render import CHART, SUPPORTED_VERSIONS, chart_objects, render_chart

GOLDEN = Path(__file__).with_name("chart_golden")
VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    "namespaced": {
        "watchNamespace": "inference",
        "metricsPort": 9000,
        "resyncSeconds": 30,
        "workerImages": {"prefill": "registry.lan/prefill:cuda12", "decode": "registry.lan/decode:arm64"},
    },
    "agents": {
        "watchNamespace": "inference",
        "agents": [{"name": "mac-studio"}, {"name": "mac-mini", "namespaces": ["inference", "staging"]}],
    },
    "two-replicas": {
        "replicas": 2,
        "leaderElection": {"leaseDurationSeconds": 30, "renewDeadlineSeconds": 20},
    },
    "no-election": {"leaderElection": {"enabled": False}},
    "example": {
        "example": {"enabled": True, "name": "first-try"},
        "imagePullSecrets": [{"name": "regcred"}],
        "nodeSelector": {"kubernetes.io/arch": "amd64"},
        "image": {"tag": "dev", "pullPolicy": "Always"},
    },
}


def as_text(rendered: dict[str, str]) -> str:
    """The operator's templates as `helm template` prints them; monitoring-* templates have their own
    tests (tests/monitoring/), so their changes do not invalidate these goldens."""
    parts = [
        f"# Source: {path}\n{text.strip()}\n"
        for path, text in sorted(rendered.items())
        if text.strip() and "/monitoring-" not in path
    ]
    return "---\n".join(parts)


@pytest.mark.parametrize("name", VALUE_SETS)
def test_rendered_chart_matches_golden(name: str) -> None:
    text = as_text(render_chart(VALUE_SETS[name]))
    golden = GOLDEN / f"{name}.yaml"
    if os.environ.get("HYBRID_REGEN_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text(), f"chart output changed for {name}; regenerate (see module docstring)"


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_rendered_object_is_valid(name: str) -> None:
    for obj in chart_objects(render_chart(VALUE_SETS[name])):
        if obj["kind"] == "HybridInference":
            assert validate(obj) == []
            continue
        for version in (SUPPORTED_VERSIONS[0], SUPPORTED_VERSIONS[-1]):
            kubernetes_validate.validate(obj, version, strict=True)


def test_chart_crd_is_identical_to_the_canonical_crd() -> None:
    assert (CHART / "crds" / "hybridinference.yaml").read_bytes() == CRD_PATH.read_bytes()


def test_operator_deployment_runs_the_operator_command_restricted() -> None:
    deployment = next(
        o for o in chart_objects(render_chart(VALUE_SETS["namespaced"])) if o["kind"] == "Deployment"
    )
    pod = deployment["spec"]["template"]["spec"]
    ctr = pod["containers"][0]
    assert ctr["command"] == ["hybrid-inference", "operator"]
    assert "--namespace=inference" in ctr["args"] and "--metrics-port=9000" in ctr["args"]
    assert "--decode-image=registry.lan/decode:arm64" in ctr["args"]
    assert ctr["securityContext"]["readOnlyRootFilesystem"] is True
    assert ctr["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert ctr["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "liveness"}


def operator_deployment(values: dict[str, Any]) -> dict[str, Any]:
    deployment: dict[str, Any] = next(
        o for o in chart_objects(render_chart(values)) if o["kind"] == "Deployment"
    )
    return deployment


def test_two_replicas_elect_a_leader_and_roll_without_overlap() -> None:
    deployment = operator_deployment(VALUE_SETS["two-replicas"])
    ctr = deployment["spec"]["template"]["spec"]["containers"][0]
    assert deployment["spec"]["replicas"] == 2
    assert "--leader-election" in ctr["args"]
    assert {"--lease-duration-seconds=30", "--renew-deadline-seconds=20", "--retry-period-seconds=2"} <= set(
        ctr["args"]
    )
    assert ctr["env"] == [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    # The new pod is ready while it stands by; the old one hands over the Lease when it is stopped.
    rolling = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    assert deployment["spec"]["strategy"] == rolling


def test_without_election_one_replica_is_recreated_never_overlapping() -> None:
    deployment = operator_deployment(VALUE_SETS["no-election"])
    ctr = deployment["spec"]["template"]["spec"]["containers"][0]
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert not any(arg.startswith("--lease") or arg == "--leader-election" for arg in ctr["args"])
    assert "env" not in ctr


def test_notes_tell_the_user_what_to_apply_next() -> None:
    notes = render_chart({})["hybrid-inference/templates/NOTES.txt"]
    assert "kubectl apply -f examples/single-node-cpu.yaml" in notes
    assert "get hinf" in notes
    with_example = render_chart(VALUE_SETS["example"])["hybrid-inference/templates/NOTES.txt"]
    assert "get hinf first-try -w" in with_example


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"resyncSeconds": 0}, "resyncSeconds"),
        ({"watchNamespace": "Not_A_Namespace"}, "watchNamespace"),
        ({"imag": {"tag": "x"}}, "imag"),
        ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
        ({"replicas": 0}, "replicas"),
        (
            {"replicas": 2, "leaderElection": {"enabled": False}},
            "replicas 2 needs leaderElection.enabled=true",
        ),
        ({"leaderElection": {"retryPeriodSeconds": 10}}, "retryPeriodSeconds 10 < renewDeadlineSeconds 10"),
        ({"leaderElection": {"leaseDuration": 15}}, "leaseDuration"),
    ],
)
def test_bad_values_fail_naming_the_value(values: dict[str, Any], named: str) -> None:
    with pytest.raises(helm.HelmError, match=re.escape(named)):
        render_chart(values)


def test_chart_lints_clean() -> None:
    report = helm.lint(CHART, strict=True)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_every_value_is_documented() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = [
        line.strip()
        for index, line in enumerate(lines)
        if re.match(r"^\s*[A-Za-z][\w-]*:", line) and not lines[index - 1].strip().startswith("#")
    ]
    assert undocumented == []


def test_monitoring_switches_exist_and_are_off() -> None:
    monitoring = yaml.safe_load((CHART / "values.yaml").read_text())["monitoring"]
    switches = {
        name: monitoring[name]["enabled"] for name in ("dashboards", "prometheusRule", "serviceMonitor")
    }
    assert switches == {"dashboards": False, "prometheusRule": False, "serviceMonitor": False}
