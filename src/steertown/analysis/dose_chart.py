"""The dose-response curves of a run's verification, drawn: trait vs random directions.

`verification/model_checks.json` holds, per swept trait, the mean held-out margin at every
coefficient along the trait's vector (the curve) and, for each random direction of the
same norm, its finite-difference slope at +-c (random directions are scored at +-c only,
not along the whole sweep). The chart draws the trait's curve as measured and each random
direction as the straight line its slope gives through the trait curve's value at 0, so a
trait that carries its vector rises well above the fan of random lines.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import altair as alt

WIDTH = 150


def dose_rows(sweep: dict[str, Any]) -> list[dict]:
    """Plot rows of `model_checks.json`'s `sweep`: one per (trait, direction, coefficient).

    `direction` is "trait" for the measured curve, "random k" for random direction k's
    line over [-c, +c]; `score` is the mean margin over held-out items.
    """
    rows: list[dict] = []
    c = float(sweep.get("control_coef") or 0.0)
    for trait, t in (sweep.get("traits") or {}).items():
        curve = {float(k): float(v) for k, v in (t.get("margin") or {}).get("curve", {}).items()}
        if not curve:
            continue
        rows += [{"trait": trait, "direction": "trait", "coefficient": x, "score": y}
                 for x, y in sorted(curve.items())]
        at0 = curve.get(0.0, sum(curve.values()) / len(curve))
        for k, slope in enumerate(t.get("random_slopes") or []):
            rows += [{"trait": trait, "direction": f"random {k + 1}", "coefficient": x,
                      "score": at0 + float(slope) * x} for x in (-c, 0.0, c)]
    return rows


def dose_response_chart(rows: list[dict]) -> alt.Chart:
    """One small panel per trait: the trait's curve (bold, points) over the random lines."""
    base = alt.Chart(alt.Data(values=rows)).encode(
        x=alt.X("coefficient:Q", title="steering coefficient"),
        y=alt.Y("score:Q", title="mean held-out margin"),
        detail="direction:N")
    trait = base.transform_filter(alt.datum.direction == "trait").mark_line(
        point=True, strokeWidth=2.5, color="#0969da")
    random = base.transform_filter(alt.datum.direction != "trait").mark_line(
        strokeDash=[4, 3], strokeWidth=1, color="#8c959f")
    return alt.layer(random, trait).properties(width=WIDTH, height=WIDTH).facet(
        facet=alt.Facet("trait:N", title=None), columns=5).properties(
        title="Dose-response: trait vector (blue) vs random directions of the same norm (grey)")


def dose_response_charts(run_dir: Path) -> dict[str, alt.TopLevelMixin]:
    """`{"dose_response": chart}` when the run's model checks swept a trait, else {}."""
    path = Path(run_dir) / "verification" / "model_checks.json"
    try:
        sweep = json.loads(path.read_text()).get("sweep") or {}
    except (OSError, json.JSONDecodeError, AttributeError):
        return {}
    rows = dose_rows(sweep)
    return {"dose_response": dose_response_chart(rows)} if rows else {}
