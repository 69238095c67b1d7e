"""The planner against published measurements it was not fitted to (planner/validation.yaml).

Each row is predicted with the built-in device profile and model shape, and the share of rows within
±20% is reported for prefill and decode separately (run with `-s` to see the table). The shares are
what they are: the assertions below hold for the current model and say where it stands; the goal
(≥ 80% each) is not met yet (docs/planner.md, "Validation table").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hybrid_operator.planner import Request, device_profile, model_shape
from hybrid_operator.planner.roofline import decode_seconds, prefill_seconds

TABLE = Path(__file__).parents[3] / "operator" / "hybrid_operator" / "planner" / "validation.yaml"
WITHIN = 0.20


def _rows() -> list[dict[str, Any]]:
    return list(yaml.safe_load(TABLE.read_text())["rows"])


def _predict(row: dict[str, Any]) -> dict[str, float]:
    """Predicted tokens/s for the phases the row measured."""
    request = Request(row["prompt"], row["output"], dtype=row["dtype"], weights=row["weights"])
    model, device = model_shape(row["model"]), device_profile(row["device"], row["engine"])
    predicted = {}
    if "prefill_tps" in row:
        predicted["prefill"] = row["prompt"] / prefill_seconds(model, device, request)
    if "decode_tps" in row:
        predicted["decode"] = row["output"] / decode_seconds(model, device, request)
    return predicted


@pytest.fixture(scope="module")
def errors() -> dict[str, list[tuple[str, float]]]:
    """Relative error (predicted / measured - 1) per phase, with a printed table."""
    by_phase: dict[str, list[tuple[str, float]]] = {"prefill": [], "decode": []}
    print(f"\n{'device':10} {'engine':13} {'model':13} {'weights':8} {'phase':8} measured predicted  error")
    for row in _rows():
        for phase, tps in _predict(row).items():
            measured = row[f"{phase}_tps"]
            error = tps / measured - 1
            label = f"{row['device']}/{row['engine']}/{row['weights']}"
            by_phase[phase].append((label, error))
            print(
                f"{row['device']:10} {row['engine']:13} {row['model']:13} {row['weights']:8} {phase:8}"
                f" {measured:8.2f} {tps:9.2f} {error:+6.0%}"
            )
    for phase, errs in by_phase.items():
        inside = sum(abs(e) <= WITHIN for _, e in errs)
        print(f"{phase}: {inside}/{len(errs)} within ±{WITHIN:.0%}")
    return by_phase


def test_every_row_names_a_source_a_cross_check_and_known_profiles() -> None:
    rows = _rows()
    assert rows
    for row in rows:
        assert row["source"] and row["cross_check"], row
        assert "prefill_tps" in row or "decode_tps" in row, row
        assert row["prompt"] > 0 if "prefill_tps" in row else True, row
        assert row["output"] > 0 if "decode_tps" in row else True, row
        _predict(row)  # profiles, shapes and formats all resolve


def test_both_phases_are_covered(errors: dict[str, list[tuple[str, float]]]) -> None:
    assert errors["prefill"] and errors["decode"]


def _share(errs: list[tuple[str, float]]) -> float:
    return sum(abs(e) <= WITHIN for _, e in errs) / len(errs)


def test_shares_within_twenty_percent_do_not_fall_below_todays(
    errors: dict[str, list[tuple[str, float]]],
) -> None:
    # Today (7 rows): decode 3/4, prefill 1/3 (quantised prefill on llama.cpp Metal is over-
    # predicted ~+33%: its dequantising matmul kernels run below the F16 GEMM rate). Goal: >= 80%.
    assert _share(errors["decode"]) >= 0.75
    assert _share(errors["prefill"]) >= 1 / 3


def test_no_prediction_is_off_by_more_than_forty_percent(
    errors: dict[str, list[tuple[str, float]]],
) -> None:
    worst = [(label, e) for errs in errors.values() for label, e in errs if abs(e) > 0.40]
    assert not worst
