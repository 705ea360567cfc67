"""A study that survives being stopped, its results and its reproduction (mock backend).

A 2-mode x 2-seed study of 6 ticks is killed (-9) in the middle of its second cell; the
same command then skips the finished cell without starting its flow, resumes the killed
one from its checkpoint and runs the rest. The analyze stage flags the killed study as
incomplete and the finished one as complete; `--reproduce` passes on an unchanged cell and
fails when a recorded number is altered. The statistics are checked by hand.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
sys.path.insert(0, str(ROOT))

STUDY = """\
name: tiny
arm: fast
seeds: [1, 2]
modes: [vectors, placebo]
overrides: [model=mock, memory.embedder=hashing, steps=6, population=10, checkpoint_every=2,
            max_events_per_tick=8, color=false, steering.spread=0.8]
data_dir: {data}
forks: {{seeds: [1, 2], at: 4, agent: agent-000, trait: E}}
"""

# Runs the study command with a real kill -9 right after the checkpoint at `at` of `run_id`.
KILLER = """\
import os, signal, sys
sys.path.insert(0, {root!r})
from flows.environment import configure
configure()
from flows import pipeline
real = pipeline.simulate_chunk
def killing_chunk(config, run_dir, start, end):
    out = real(config, run_dir, start, end)
    if config["run_id"] == {run_id!r} and end >= {at}:
        os.kill(os.getpid(), signal.SIGKILL)
    return out
pipeline.simulate_chunk = killing_chunk
from flows.study import main
sys.exit(main({argv!r}))
"""


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update(PREFECT_HOME=str(tmp / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true",
               PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
    return env


def _study(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PY, str(ROOT / "flows/study.py"), *args], env=_env(tmp), cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def _manifest(data: Path, run_id: str) -> dict:
    return json.loads((data / "dumps" / run_id / "manifest.json").read_text())


@pytest.fixture(scope="module")
def killed_then_resumed(tmp_path_factory):
    """The tiny study killed in its second cell, then re-run; returns what each step saw."""
    tmp = tmp_path_factory.mktemp("study")
    data, folder = tmp / "data", tmp / "studies" / "tiny"
    folder.mkdir(parents=True)
    (folder / "study.yaml").write_text(STUDY.format(data=data))
    killer = KILLER.format(root=str(ROOT), run_id="tiny-placebo-s1", at=2,
                           argv=[str(folder), "--stage", "simulate"])
    # Own session and files, not pipes: the killed process's Prefect server (a child of
    # it) outlives it holding its outputs open; the whole group is ended below.
    with open(tmp / "killed.out", "w") as out:
        proc = subprocess.Popen([PY, "-c", killer], env=_env(tmp), cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait(timeout=600)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    first = subprocess.CompletedProcess(proc.args, proc.returncode,
                                        (tmp / "killed.out").read_text(), "")
    seen = {"first": first, "after_kill": {
        rid: _manifest(data, rid) if (data / "dumps" / rid).exists() else None
        for rid in ("tiny-vectors-s1", "tiny-placebo-s1", "tiny-vectors-s2")}}
    seen["analyze_partial"] = _study(tmp, str(folder), "--stage", "analyze")
    seen["results_partial"] = (folder / "results.md").read_text()
    seen["second"] = _study(tmp, str(folder), "--stage", "simulate")
    seen["third"] = _study(tmp, str(folder), "--stage", "all")
    return tmp, data, folder, seen


@pytest.mark.slow
def test_killed_study_resumes_and_skips_finished_cells(killed_then_resumed):
    tmp, data, folder, seen = killed_then_resumed
    assert seen["first"].returncode == -9, seen["first"].stdout[-2000:]
    after = seen["after_kill"]
    assert after["tiny-vectors-s1"]["status"] == "complete"
    assert after["tiny-placebo-s1"]["status"] == "running"
    assert after["tiny-placebo-s1"]["ticks_done"] == 2
    assert after["tiny-vectors-s2"] is None  # never started
    second = seen["second"]
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    lines = [ln for ln in second.stdout.splitlines() if ln.startswith("[simulate ")]
    assert len(lines) == 4, second.stdout[-3000:]
    assert "tiny-vectors-s1: skipped (complete)" in lines[0]
    assert "tiny-placebo-s1: complete (resumed from tick 2)" in lines[1]
    assert "tiny-vectors-s2: complete (" in lines[2] and "ETA" in lines[2]
    # the finished cell's flow never started again: its manifest is as the kill left it
    assert _manifest(data, "tiny-vectors-s1") == after["tiny-vectors-s1"]
    for rid in ("tiny-vectors-s1", "tiny-placebo-s1", "tiny-vectors-s2", "tiny-placebo-s2"):
        m = _manifest(data, rid)
        assert m["status"] == "complete" and m["ticks_done"] == 6
    # a third run of the whole study skips every cell and verifies each once
    third = seen["third"].stdout
    assert third.count("skipped (complete)") == 4, third[-3000:]
    assert third.count("Steering verification:") == 4
    records = sorted(p.name for p in (data / "study-state" / "tiny" / "verify").glob("*.json"))
    assert records == sorted(f"tiny-{m}-s{s}.json" for s in (1, 2) for m in ("placebo", "vectors"))
    again = _study(tmp, str(folder), "--stage", "verify").stdout
    assert again.count("verified earlier") == 4 and "Steering verification:" not in again


@pytest.mark.slow
def test_results_flag_an_incomplete_study_and_state_a_complete_one(killed_then_resumed):
    _, _, folder, seen = killed_then_resumed
    assert seen["analyze_partial"].returncode == 0, seen["analyze_partial"].stderr[-2000:]
    partial = seen["results_partial"]
    assert "INCOMPLETE: 1 of 4 cells complete" in partial and "not declared" in partial
    assert partial.count("NOT complete") == 3
    done = (folder / "results.md").read_text()
    assert "**Status: complete** (4 of 4 cells)" in done and "NOT complete" not in done
    assert "- Verification (`steertown verify`, default budget; 4 of 4 cells verified)" in done
    assert "vectors > placebo for" in done and "of 5 traits" in done
    for name in ("effects.csv", "slopes.csv", "society.csv", "verification.csv", "forest.png",
                 "society.png", "index.html"):
        assert (folder / name).is_file(), name
    with open(folder / "effects.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    primary = [r for r in rows if r["family"] == "primary"]
    assert sorted(r["trait"] for r in primary) == sorted("EACON")
    assert all(r["p_holm"] != "" and r["n"] == "2" for r in primary)
    # the headline's numbers are the CSV's: the E row's mean appears in results.md
    e = next(r for r in primary if r["trait"] == "E")
    assert f"p_talk: {float(e['mean']):+.3f}" in done


@pytest.mark.slow
def test_reproduce_passes_on_an_unchanged_cell_and_fails_on_an_altered_one(
        killed_then_resumed):
    tmp, _, folder, _ = killed_then_resumed
    # the cell that was killed and resumed reproduces exactly from scratch
    ok = _study(tmp, "--reproduce", str(folder), "--seed", "1", "--mode", "placebo")
    assert ok.returncode == 0, ok.stdout[-3000:] + ok.stderr[-3000:]
    assert "REPRODUCED: tiny-placebo-s1" in ok.stdout
    path = folder / "slopes.csv"
    original = path.read_text()
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        row = next(r for r in rows if r["run_id"] == "tiny-placebo-s1" and r["slope"])
        row["slope"] = repr(float(row["slope"]) + 1e-9)
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
            w.writeheader()
            w.writerows(rows)
        bad = _study(tmp, "--reproduce", str(folder), "--seed", "1", "--mode", "placebo")
    finally:
        path.write_text(original)
    assert bad.returncode == 1, bad.stdout[-3000:]
    assert "NOT REPRODUCED" in bad.stdout
    assert f"slope {row['trait']} -> {row['measure']}" in bad.stdout


def test_study_file_mistakes_are_one_line_exit_2(tmp_path):
    cases = [("name: x\narm: fast\nseeds: [1]\nmodez: [vectors]\n", "modez: unknown key"),
             ("arm: fast\nseeds: [1]\nmodes: [vectors, sideways]\n", "unknown mode 'sideways'"),
             ("arm: huge\nseeds: [1]\n", "unknown arm 'huge'"),
             ("arm: fast\nseeds: [1]\noverrides: [stepz=3]\n", "stepz: unknown key")]
    for i, (text, msg) in enumerate(cases):
        folder = tmp_path / f"s{i}"
        folder.mkdir()
        (folder / "study.yaml").write_text(text)
        p = _study(tmp_path, str(folder), "--stage", "simulate")
        assert p.returncode == 2, (text, p.stdout[-1000:], p.stderr[-1000:])
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and msg in lines[0], p.stderr


def test_steering_group_equals_the_mode_key():
    from flows.compose import compose_config

    base = ["+arm=fast", "seed=1"]
    for mode in ("vectors", "placebo", "prompt", "off"):
        group = compose_config([*base, f"steering={mode}"])
        key = compose_config([*base, f"steering.mode={mode}"])
        assert group == key and group["steering"]["mode"] == mode  # "off", not YAML's False
    assert compose_config(base)["steering"]["mode"] == "vectors"


def test_study_spec_run_ids_are_fixed_and_readable(tmp_path):
    from flows.study_spec import load_study

    (tmp_path / "study.yaml").write_text(STUDY.format(data=tmp_path / "d"))
    spec = load_study(tmp_path)
    ids = [c.run_id for c in spec.cells()]
    assert ids == ["tiny-vectors-s1", "tiny-placebo-s1", "tiny-vectors-s2", "tiny-placebo-s2"]
    assert [c.run_id for c in load_study(tmp_path).cells()] == ids
    cfg = spec.cells()[1].config
    assert cfg["storage_dir"] == str(tmp_path / "d" / "dumps")
    assert cfg["steering"]["mode"] == "placebo" and cfg["verification"]["enabled"] is False
    moved = load_study(tmp_path, data_dir=tmp_path / "elsewhere")
    assert moved.cells()[0].config["storage_dir"] == str(tmp_path / "elsewhere" / "dumps")


def test_a_cell_whose_prefect_server_did_not_start_runs_once_more(tmp_path, monkeypatch):
    """Prefect's temporary API server can fail its first start (prefect#16397): that cell
    is run again at once; any other failure is reported and not retried."""
    import flows.pipeline
    from flows.study_spec import load_study
    from flows.study_stages import simulate_stage

    (tmp_path / "study.yaml").write_text(STUDY.format(data=tmp_path / "d"))
    spec = load_study(tmp_path)
    calls = []

    def flaky(config):
        calls.append(config["run_id"])
        if config["run_id"] == "tiny-vectors-s1" and calls.count("tiny-vectors-s1") == 1:
            raise RuntimeError("Timed out while attempting to connect to ephemeral Prefect "
                               "API server.")
        if config["run_id"] == "tiny-placebo-s1":
            raise ValueError("something else")

    monkeypatch.setattr(flows.pipeline, "run_flow", flaky)
    said = []
    out = simulate_stage(spec, say=said.append)
    assert out["tiny-vectors-s1"] == "complete" and calls.count("tiny-vectors-s1") == 2
    assert any("tiny-vectors-s1: failed: Timed out" in s and "once more" in s for s in said)
    assert out["tiny-placebo-s1"] == "failed: something else"
    assert calls.count("tiny-placebo-s1") == 1


def test_town_v1_study_file_is_the_preregistered_design():
    from flows.study_spec import load_study

    spec = load_study(ROOT / "studies" / "town-v1", data_dir="/tmp/unused-town-v1")
    assert spec.arms == ["fast"] and spec.seeds == [1, 2, 3, 4, 5]
    assert spec.modes == ["vectors", "placebo", "prompt", "off"]
    cells = spec.cells()
    assert len(cells) == 20
    for c in cells:
        cfg = c.config
        assert (cfg["steps"], cfg["population"], cfg["model"]["name"]) == (40, 32, "smollm2")
        assert cfg["model"]["dtype"] == "float32" and cfg["steering"]["mode"] == c.mode
    # same seed = same agents and coefficients in every mode: only the mode differs
    from steertown.config import flatten

    by_seed = {}
    for c in cells:
        flat = flatten(c.config)
        flat.pop("steering.mode"), flat.pop("run_id")
        by_seed.setdefault(c.seed, []).append(flat)
    for flats in by_seed.values():
        assert all(f == flats[0] for f in flats)


def test_holm_against_a_hand_example():
    from steertown.analysis.study_stats import holm

    # sorted: 0.005 x5 = 0.025; 0.01 x4 = 0.04; 0.03 x3 = 0.09; 0.04 x2 = 0.08 -> 0.09
    # (monotone); 0.2 x1 = 0.2
    assert holm([0.01, 0.04, 0.03, 0.005, 0.2]) == pytest.approx([0.04, 0.09, 0.09, 0.025, 0.2])
    assert holm([0.5, None, 0.01]) == pytest.approx([0.5, None, 0.02])  # None is not a test
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])  # capped at 1


def test_t_summary_against_a_hand_example():
    from steertown.analysis.study_stats import t_summary

    s = t_summary([1.0, 2.0, 3.0])  # mean 2, sd 1, se 1/sqrt(3), t(0.975, 2) = 4.3027
    half = 4.302653 / 3 ** 0.5
    assert (s["mean"], s["ci_low"], s["ci_high"]) == pytest.approx((2, 2 - half, 2 + half))
    assert s["p"] == pytest.approx(0.07418, abs=1e-4)  # t = 3.4641 on 2 df, two-sided
    assert t_summary([0.5])["p"] is None and t_summary([])["mean"] is None


def test_primary_family_is_holm_corrected_across_the_five_traits():
    from steertown.analysis.study_results import PRIMARY, effect_rows
    from steertown.analysis.study_stats import holm, t_summary

    slopes = []
    for seed, noise in ((1, 0.0), (2, 0.1), (3, -0.05)):
        for k, (trait, measure) in enumerate(PRIMARY.items()):
            for mode, base in (("vectors", 0.2 * k), ("placebo", 0.0), ("prompt", 0.1)):
                slopes.append({"arm": "fast", "seed": seed, "mode": mode, "trait": trait,
                               "measure": measure, "slope": base + noise * (mode == "vectors")})
            slopes.append({"arm": "fast", "seed": seed, "mode": "vectors", "trait": trait,
                           "measure": "p_move", "slope": 0.3 + noise})
            for mode in ("placebo", "prompt"):
                slopes.append({"arm": "fast", "seed": seed, "mode": mode, "trait": trait,
                               "measure": "p_move", "slope": 0.0})
    rows = effect_rows(slopes)
    primary = [r for r in rows if r["family"] == "primary"]
    assert [(r["trait"], r["measure"]) for r in primary] == list(PRIMARY.items())
    raw = [t_summary([0.2 * k + n for n in (0.0, 0.1, -0.05)])["p"] for k in range(5)]
    assert [r["p"] for r in primary] == pytest.approx(raw, nan_ok=True)
    assert [r["p_holm"] for r in primary] == pytest.approx(holm(raw))
    assert all(r["p_holm"] is None for r in rows if r["family"] == "exploratory")
    # vectors - prompt is its own family of five, Holm-corrected within itself
    second = [r for r in rows if r["family"] == "secondary: vectors - prompt"]
    assert [(r["trait"], r["measure"]) for r in second] == list(PRIMARY.items())
    raw2 = [t_summary([0.2 * k - 0.1 + n for n in (0.0, 0.1, -0.05)])["p"] for k in range(5)]
    assert [r["p_holm"] for r in second] == pytest.approx(holm(raw2))
    assert {r["family"] for r in rows} == {"primary", "secondary: vectors - prompt",
                                           "exploratory"}  # prompt - off: no off runs


@pytest.mark.slow
def test_forks_stage_writes_the_what_if_effects_and_resumes(killed_then_resumed):
    import pyarrow.parquet as pq

    tmp, data, folder, _ = killed_then_resumed
    first = _study(tmp, str(folder), "--stage", "forks")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    forks = {s: {v: data / "dumps" / f"tiny-vectors-s{s}-fork-t4-agent-000-E{v}"
                 for v in ("p1", "m1")} for s in (1, 2)}
    for s, pair in forks.items():
        for path in pair.values():
            m = json.loads((path / "manifest.json").read_text())
            assert m["status"] == "complete" and m["fork"]["at"] == 4
            assert m["fork"]["parent"] == f"tiny-vectors-s{s}"
    with open(folder / "forks.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["seed"] for r in rows} == {"1", "2"}
    # the agent's own actions from the fork tick on, counted here from the Parquet files
    for s, pair in forks.items():
        for v, col in (("p1", "plus"), ("m1", "minus")):
            ticks = [t for p in sorted((pair[v] / "actions").glob("*.parquet"))
                     for t, a in zip(*pq.read_table(p, columns=["tick", "agent_id"])
                                     .to_pydict().values(), strict=True)
                     if a == "agent-000" and t >= 4]
            row = next(r for r in rows if r["seed"] == str(s) and r["measure"] == "actions")
            assert float(row[col]) == len(ticks)
    md = (folder / "forks.md").read_text()
    assert "agent-000's E set to -1 and to +1" in md and "talk_received" in md
    # the command that regenerates it, as for results.md
    assert f"`python flows/study.py {folder} --data-dir {data} --stage forks`" in md, md[:400]
    diff = json.loads((forks[1]["p1"] / "analysis" / "diffs" /
                       f"{forks[1]['m1'].name}.json").read_text())
    assert diff["first_divergent_tick"] is None or diff["first_divergent_tick"] >= 4
    again = _study(tmp, str(folder), "--stage", "forks")
    assert again.stdout.count("skipped (complete)") == 4, again.stdout[-2000:]
