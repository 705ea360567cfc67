"""import-legacy on the project's own small fixture and, when present, the shared debug32 dump."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from steertown.analysis.summary import analyze_run
from steertown.cli import main
from steertown.legacy import import_legacy
from steertown.storage.run_dir import RunDir, RunDirError

FIXTURE = Path(__file__).parent / "fixtures" / "legacy_small"
DEBUG32 = Path(__file__).resolve().parents[2] / "shared" / "legacy-dumps" / "debug32"


def _digest(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture
def dump(tmp_path):
    """A writable copy of the fixture, for tests that break it."""
    return Path(shutil.copytree(FIXTURE, tmp_path / "dump"))


def test_import_small_fixture(tmp_path):
    before = _digest(FIXTURE)
    path = import_legacy(FIXTURE, tmp_path / "dumps", run_id="small")
    assert _digest(FIXTURE) == before  # the source is never modified
    rd = RunDir(path)
    m = rd.read_manifest()
    assert m["source"] == "legacy" and m["model"]["name"] == "legacy-mock"
    assert m["status"] == "complete" and m["ticks_done"] == 3 and m["config"]["layers"] == [16]
    agents = {a["agent_id"]: a for a in rd.read_table("agents").to_pylist()}
    assert set(agents) == {"agent-000", "agent-001", "agent-002"}
    assert agents["agent-000"]["E"] == pytest.approx(0.9)
    assert agents["agent-001"]["N"] == pytest.approx(-0.2)
    assert agents["agent-001"]["goal"] == "goal of agent-001"
    actions = rd.read_table("actions").to_pylist()
    assert [a["tick"] for a in actions] == [1, 1, 1, 2, 2, 2, 3]  # legacy ticks count from 0
    move = next(a for a in actions if a["action_type"] == "MOVE")
    assert (move["location"], move["location_after"]) == ("town_square", "library")
    failed = [a for a in actions if not a["success"]]
    assert [(a["action_type"], a["failure_reason"]) for a in failed] == [("RESEARCH", "failure")]
    msgs = rd.read_table("messages").to_pylist()
    assert all(m["layers"] == [16] for m in msgs)
    assert msgs[0]["alpha_E"] == pytest.approx(0.9) and msgs[0]["kind"] == "action"
    # agent-000 acts twice in tick 2: its k-th message pairs with its k-th action.
    t2 = [(m["event_id"], m["content"]) for m in msgs if m["tick"] == 2 and m["agent_id"] == "agent-000"]
    assert t2 == [(0, "agent-000 does cite"), (1, "agent-000 does talk")]
    aside = [m for m in msgs if m["kind"] == "message"]
    assert len(aside) == 1 and aside[0]["content"] == "an aside"

    s = analyze_run(path)
    assert s["counts"]["actions"] == 7 and s["counts"]["messages"] == 8
    assert s["steering"]["presence"]["nonzero_share"] == 1.0
    assert s["success"]["overall_rate"] == pytest.approx(6 / 7, abs=1e-6)
    assert s["timings"]["total_tick_seconds"] is None  # the legacy format has no timings


def test_existing_target_needs_overwrite(tmp_path):
    import_legacy(FIXTURE, tmp_path, run_id="x")
    with pytest.raises(RunDirError, match="already exists"):
        import_legacy(FIXTURE, tmp_path, run_id="x")
    assert import_legacy(FIXTURE, tmp_path, run_id="x", overwrite=True).is_dir()


def test_partial_dump_names_the_missing_file(dump, tmp_path):
    (dump / "messages" / "messages_t00002.parquet").unlink()
    with pytest.raises(RunDirError, match="messages_t00002.parquet"):
        import_legacy(dump, tmp_path / "out")
    assert not (tmp_path / "out" / "dump").exists()


def test_malformed_files_name_the_file(dump, tmp_path):
    (dump / "actions" / "actions_t00003.parquet").write_bytes(b"not parquet")
    with pytest.raises(RunDirError, match="actions_t00003.parquet: unreadable"):
        import_legacy(dump, tmp_path / "out")
    assert not any((tmp_path / "out").iterdir())  # nothing half-written left behind


def test_missing_column_and_bad_json(dump, tmp_path):
    f = dump / "messages" / "messages_t00001.parquet"
    t = pq.read_table(f)
    pq.write_table(t.drop_columns(["steering_snapshot"]), f)
    with pytest.raises(RunDirError, match="messages_t00001.parquet.*steering_snapshot"):
        import_legacy(dump, tmp_path / "out")
    i = t.schema.get_field_index("steering_snapshot")
    bad = pa.array(["{not json"] * t.num_rows)
    pq.write_table(t.set_column(i, "steering_snapshot", bad), f)
    with pytest.raises(RunDirError, match="row 0: steering_snapshot is not JSON"):
        import_legacy(dump, tmp_path / "out")


def test_not_a_dump(tmp_path):
    with pytest.raises(RunDirError, match="no such"):
        import_legacy(tmp_path / "missing", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunDirError, match="messages"):
        import_legacy(tmp_path / "empty", tmp_path / "out")


def test_cli_import_legacy(tmp_path, capsys):
    assert main(["import-legacy", str(FIXTURE), "--run-id", "cli", "--storage-dir",
                 str(tmp_path)]) == 0
    assert "imported" in capsys.readouterr().out
    assert main(["import-legacy", str(FIXTURE), "--run-id", "cli", "--storage-dir",
                 str(tmp_path)]) == 2
    assert "already exists" in capsys.readouterr().err


GUIDE = Path(__file__).parent / "fixtures" / "legacy_guide"
GUIDE_QUOTED = {"E": 0.85, "A": 0.48, "C": 0.51, "O": -0.04, "N": 0.03}
# dump -> (agents, ticks, actions, per-trait logged means as the data gives them).
# The shared debug32 dump (outside the repo) is checked where present; the fixture, built
# to average to the guide's quoted means, runs on every clone, so nothing here skips.
DUMPS = [("guide-fixture", GUIDE, (32, 4, 128, GUIDE_QUOTED))] + (
    # The guide quotes E +0.85, A +0.48, C +0.51, O -0.04, N +0.03. debug32 itself gives
    # E +0.79, A +0.47, C +0.62, O -0.02, N -0.02 (per-agent means, and per message alike):
    # same signs and ordering of magnitude, C is 0.11 off. Pin the data, bound the guide.
    [("debug32", DEBUG32, (32, 200, 5944, {"E": 0.792, "A": 0.467, "C": 0.618, "O": -0.019,
                                            "N": -0.017}))] if DEBUG32.is_dir() else [])


@pytest.mark.parametrize("name,dump,expected", DUMPS, ids=[d[0] for d in DUMPS])
def test_guide_run_matches_the_guide(name, dump, expected, tmp_path):
    agents, ticks, actions, data = expected
    path = import_legacy(dump, tmp_path, run_id=name)
    s = analyze_run(path)
    assert s["counts"]["agents"] == agents and s["counts"]["ticks"] == ticks
    assert s["steering"]["presence"]["nonzero_share"] == 1.0  # "100% ... non-zero steering"
    assert s["steering"]["presence"]["agents_steered"] == agents
    means = {r["trait"]: r["logged_mean"] for r in s["steering"]["traits"]}
    for t in GUIDE_QUOTED:
        assert means[t] == pytest.approx(data[t], abs=0.002)
        assert abs(means[t] - GUIDE_QUOTED[t]) < 0.15
    assert s["counts"]["actions"] == actions and s["success"]["overall_rate"] == 1.0
