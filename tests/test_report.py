"""The HTML report: self-contained, escaped, with verification, config and charts."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from synthetic_run import VERIFICATION, build_run

from steertown.analysis.charts import CHART_NAMES
from steertown.analysis.report import write_report
from steertown.cli import main


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    storage = tmp_path_factory.mktemp("storage")
    run = build_run(storage, verification=VERIFICATION)
    return write_report(run, tmp_path_factory.mktemp("reports"))


def test_report_layout(page):
    assert page.name == "index.html" and page.parent.name == "synth"
    for name in CHART_NAMES:
        assert (page.parent / f"{name}.png").stat().st_size > 2000
    assert (page.parent / "summary.json").is_file()


def test_report_is_self_contained(page):
    text = page.read_text()
    assert 'src="http' not in text and "src='http" not in text
    assert not re.search(r"<script[^>]+src=", text)  # every script is inline
    assert not re.search(r"<link[^>]+href=[\"']?https?:", text)
    assert "window.vegaEmbed" in text or "vegaEmbed=" in text  # the bundle is inlined
    # the run's charts plus the fingerprint heatmap (its own section)
    assert text.count("vegaEmbed(\"#chart") == len(CHART_NAMES) + 1


def test_report_content(page):
    text = page.read_text()
    assert "steertown run synth" in text
    assert "steering values present" in text and "dose response E" in text
    assert 'class="verdict pass"' in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text  # check details are escaped
    assert "<script>alert(1)" not in text
    assert "inference.max_new_tokens" in text  # the flattened config
    assert "81.8%" in text  # success rate highlight (9/11)
    assert "Behavioural fingerprint" in text and "p_work" in text  # trait x behaviour
    assert (page.parent / "fingerprint.png").stat().st_size > 2000


def test_report_without_verification(tmp_path):
    run = build_run(tmp_path / "s", run_id="noverify")
    text = write_report(run, tmp_path / "r").read_text()
    assert "No verification report" in text


def test_cli_analyze(tmp_path, capsys):
    run = build_run(tmp_path / "s", run_id="cli")
    assert main(["analyze", str(run), "--reports-dir", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "cli" / "index.html").is_file()
    assert (run / "analysis" / "summary.json").is_file()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
IN_CI = os.environ.get("CI", "").lower() == "true"


def render(page: Path, profile: Path) -> tuple[str, list[str]]:
    """The page's DOM after its scripts ran in headless Chromium, and its console lines.

    Without Chromium the test skips, except under CI=true, where it fails (.ci/run
    installs Chromium; a silent skip there would hide a broken install).
    """
    if CHROMIUM is None:
        if IN_CI:
            pytest.fail("CI=true but chromium is not installed: the report was not rendered")
        pytest.skip("chromium not installed (apt-get install chromium); CI fails here instead")
    r = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update",
         f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=15000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    console = [line.split("] ", 1)[-1] for line in r.stderr.splitlines() if ":CONSOLE" in line]
    return r.stdout, console


def test_report_renders_in_a_browser(page, tmp_path):
    dom, console = render(page, tmp_path / "profile")
    assert "<title>steertown synth</title>" in dom
    assert "<h1>steertown run synth</h1>" in dom
    # every chart drawn by vega-embed into its container: one SVG of marks each
    for name in CHART_NAMES:
        m = re.search(rf'<div id="chart-{name}" class="vega-embed[^"]*"[^>]*>(.*?)</svg>', dom,
                      re.S)
        assert m and 'class="marks"' in m.group(1), name
    assert dom.count("<table>") >= 8  # verification, analysis tables, config
    assert '<td class="fail">FAIL</td>' in dom and "&lt;script&gt;alert(1)" in dom
    assert console == []  # no errors, no warnings, no uncaught exceptions


def test_browser_check_sees_console_errors(page, tmp_path):
    # The check above can fail: a page with a script error is caught.
    broken = page.with_name("broken.html")
    broken.write_text(page.read_text().replace(
        "</main>", "</main><script>undefinedFunction();</script>"))
    _, console = render(broken, tmp_path / "profile")
    assert any("Uncaught ReferenceError" in c for c in console)


def test_report_draws_the_dose_response_curves(tmp_path):
    import json

    from steertown.analysis.dose_chart import dose_rows

    run = build_run(tmp_path / "storage", verification=VERIFICATION)
    curve = {"-1.0": -0.4, "0.0": 0.1, "1.0": 0.7}
    sweep = {"control_coef": 1.0, "traits": {
        "E": {"margin": {"curve": curve}, "random_slopes": [0.05, -0.02]}}}
    (run / "verification" / "model_checks.json").write_text(json.dumps({"sweep": sweep}))
    page = write_report(run, tmp_path / "reports")
    assert (page.parent / "dose_response.png").stat().st_size > 2000
    assert "Dose-response: trait vector" in page.read_text()
    rows = dose_rows(sweep)
    trait = [(r["coefficient"], r["score"]) for r in rows if r["direction"] == "trait"]
    assert trait == [(-1.0, -0.4), (0.0, 0.1), (1.0, 0.7)]  # the measured curve, in order
    rand = [r["score"] for r in rows if r["direction"] == "random 1"]
    assert rand == pytest.approx([0.05, 0.1, 0.15])  # slope 0.05 through the value at 0
