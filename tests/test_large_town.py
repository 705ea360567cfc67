"""Reports of large towns: 2,000 agents on the mock backend through analysis, charts and
the HTML report. Altair refuses charts of more than 5,000 rows, so every chart must
aggregate (bins of agents, ticks or trait values) instead of drawing raw rows."""

from __future__ import annotations

import json

import pytest

from steertown.analysis.charts import build_charts
from steertown.analysis.report import write_report
from steertown.config_loading import load_config
from steertown.inference import get_backend, get_embedder
from steertown.sim.runner import finish_run, prepare_run, run_chunk

AGENTS = 2000


@pytest.fixture(scope="module")
def big_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("big")
    cfg = load_config({"model": {"name": "mock"}, "memory": {"embedder": "hashing"},
                       "population": AGENTS, "steps": 2, "max_events_per_tick": 1500,
                       "checkpoint_every": 2, "run_id": "big", "storage_dir": str(tmp / "dumps"),
                       "reports_dir": str(tmp / "reports"), "live": False})
    plan = prepare_run(cfg, tmp)
    backend, embedder = get_backend(cfg), get_embedder(cfg.memory.embedder)
    for start, end in plan.chunks:
        run_chunk(cfg, plan.run_dir, start, end, backend, embedder)
    finish_run(plan.run_dir)
    return tmp / "dumps" / "big", tmp / "reports"


@pytest.fixture(scope="module")
def big_report(big_run):
    """The large town analysed once and its report written once (the costly part: ~30 s),
    read by the tests of its sections, its page and its rendering in a browser."""
    from steertown.analysis.summary import analyze_run

    run, reports = big_run
    summary = analyze_run(run)
    return summary, write_report(run, reports, summary=summary)


def _rows(spec: dict) -> int:
    """Rows of inline data anywhere in a Vega-Lite spec (named datasets and data.values)."""
    n = sum(len(v) for v in spec.get("datasets", {}).values())

    def walk(x):
        nonlocal n
        if isinstance(x, dict):
            if isinstance(x.get("data"), dict) and isinstance(x["data"].get("values"), list):
                n += len(x["data"]["values"])
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)
    walk({k: v for k, v in spec.items() if k != "datasets"})
    return n


def test_charts_aggregate_large_towns(big_run):
    run, _ = big_run
    charts = build_charts(run)  # raises MaxRowsError where a chart draws raw rows
    for name, chart in charts.items():
        assert _rows(chart.to_dict()) <= 5000, name
    heat = json.dumps(charts["steering_heatmap"].to_dict())
    assert f"{AGENTS:,} agents" in heat  # the binned form, not one row per agent
    beh = json.dumps(charts["behaviour_vs_trait"].to_dict())
    assert "sized by its agents" in beh  # more points than MAX_POINTS: binned


def test_every_report_chart_aggregates(big_run, big_report, tmp_path):
    # the charts of every section of the report (society charts and any added later)
    from steertown.analysis.report import SECTION_BUILDERS, ReportContext
    from steertown.storage.run_dir import RunDir

    run, _ = big_run
    summary, _ = big_report
    ctx = ReportContext(run, tmp_path, RunDir(run).read_manifest(), summary)
    charts = {n: c for b in SECTION_BUILDERS if (s := b(ctx)) for n, c in s.charts.items()}
    assert len(charts) > 6
    for name, chart in charts.items():
        assert _rows(chart.to_dict()) <= 5000, name


def test_report_of_a_large_town(big_run, big_report):
    run, _ = big_run
    _, page = big_report
    text = page.read_text()
    # every chart of the main set is embedded (sections may add more)
    for name in build_charts(run):
        assert f'vegaEmbed("#chart-{name}"' in text, name
    assert (page.parent / "steering_heatmap.png").stat().st_size > 2000
    assert f">{AGENTS:,}<" in text  # the agents card


@pytest.mark.slow
def test_charts_aggregate_long_runs(tmp_path):
    # 1,700 ticks: three series per tick used to exceed 5,000 rows
    cfg = load_config({"model": {"name": "mock"}, "memory": {"embedder": "hashing"},
                       "population": 2, "steps": 1700, "max_events_per_tick": 1,
                       "checkpoint_every": 1700, "run_id": "long",
                       "storage_dir": str(tmp_path), "live": False,
                       "optimization": {"reflect_every_n_ticks": 1000}})
    plan = prepare_run(cfg, tmp_path)
    run_chunk(cfg, plan.run_dir, 0, 1700, get_backend(cfg), get_embedder("hashing"))
    charts = build_charts(tmp_path / "long")
    for name, chart in charts.items():
        assert _rows(chart.to_dict()) <= 5000, name
    assert "5-tick bins" in json.dumps(charts["activity_over_time"].to_dict())


def test_large_report_renders_in_a_browser(big_report, tmp_path):
    from test_report import render

    _, page = big_report
    dom, console = render(page, tmp_path / "profile")
    drawn = dom.count('class="marks"')
    assert drawn == page.read_text().count('vegaEmbed("#chart-') >= 10  # society charts too
    assert console == []
