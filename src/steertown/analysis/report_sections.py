"""What a report section is made of: `Section`, the `ReportContext` its builder reads, and
`render_fragment` (the report's Jinja2 templates, autoescaped, with its filters).

Below `report` so that section builders in other modules (diff, study) import these
without importing the report that lists them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import altair as alt
import jinja2
from markupsafe import Markup


@dataclass
class Section:
    """One `<section>` of the report: a title, trusted HTML, charts and images."""

    title: str
    anchor: str
    html: Markup = field(default_factory=Markup)
    charts: dict[str, alt.TopLevelMixin] = field(default_factory=dict)  # name -> chart
    images: list[str] = field(default_factory=list)  # file names in the report folder


@dataclass
class ReportContext:
    """What a section builder may read: the run, its manifest, summary and the output folder."""

    run_dir: Path
    out_dir: Path
    manifest: dict
    summary: dict


SectionBuilder = Callable[[ReportContext], Section | None]


# --- formatting (Jinja filters and tests) ---

def _short(v: Any) -> Any:
    """Floats inside nested data cut to 4 significant digits, for display."""
    if isinstance(v, float):
        return float(f"{v:.4g}")
    if isinstance(v, dict):
        return {k: _short(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_short(x) for x in v]
    return v


def _cell(v: Any) -> Markup | str:
    """One table cell's text (escaped by the template unless it is the n/a marker)."""
    if v is None:
        return Markup('<span class="na">n/a</span>')
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v + 0.0:.4g}"  # + 0.0 turns -0.0 into 0
    if isinstance(v, list | dict):
        return json.dumps(_short(v), default=str)
    return str(v)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def columns_of(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(k for r in rows for k in r))


def _vega_spec(chart: alt.TopLevelMixin) -> Markup:
    # "</" inside a <script> would end it early; JSON allows "<\/".
    return Markup(json.dumps(chart.to_dict(), default=str).replace("</", "<\\/"))


@cache
def template_env() -> jinja2.Environment:
    """The report templates (templates/), autoescaped, with the cell and chart filters."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("steertown.analysis", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters.update(cell=_cell, columns_of=columns_of, vega_spec=_vega_spec,
                       kv_rows=lambda d: [{"key": k, "value": v} for k, v in d.items()])
    env.tests["number_value"] = _is_number
    return env


def render_fragment(template: str, **values: Any) -> Markup:
    """Render `templates/<template>` (autoescaped) to HTML a `Section` can carry."""
    return Markup(template_env().get_template(template).render(**values))
