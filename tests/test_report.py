"""The HTML report: self-contained, escaped, with verification, config and charts."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from synthetic_run import VERIFICATION, build_run

from steertown.analysis.charts import CHART_NAMES
from steertown.analysis.report import write_report
from steertown.cli import main

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "check_report_render.sh"


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
    assert text.count("vegaEmbed(\"#chart") == len(CHART_NAMES)


def test_report_content(page):
    text = page.read_text()
    assert "steertown run synth" in text
    assert "steering values present" in text and "dose response E" in text
    assert 'class="verdict pass"' in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text  # check details are escaped
    assert "<script>alert(1)" not in text
    assert "inference.max_new_tokens" in text  # the flattened config
    assert "81.8%" in text  # success rate highlight (9/11)


def test_report_without_verification(tmp_path):
    run = build_run(tmp_path / "s", run_id="noverify")
    text = write_report(run, tmp_path / "r").read_text()
    assert "No verification report" in text


def test_cli_analyze(tmp_path, capsys):
    run = build_run(tmp_path / "s", run_id="cli")
    assert main(["analyze", str(run), "--reports-dir", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "cli" / "index.html").is_file()
    assert (run / "analysis" / "summary.json").is_file()


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed")
def test_report_renders_headless(page, tmp_path):
    shot = tmp_path / "shot.png"
    subprocess.run(["bash", str(SCRIPT), str(page), str(shot), "1600"], check=True, timeout=120,
                   capture_output=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
