"""Forks: a run continued from a parent's state at tick T with keys changed.

The trust test: a fork with no change reproduces the parent row for row (every table);
a fork with a changed agent is identical before T and differs only from T on.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from steertown.analysis.diff import first_divergence
from steertown.cli import main as cli
from steertown.config_loading import load_config
from steertown.inference.embedder import HashingEmbedder
from steertown.inference.mock import MockBackend
from steertown.sim.fork import ForkError, create_fork, plan_fork
from steertown.sim.runner import finish_run, prepare_run, run_chunk
from steertown.storage import schema
from steertown.storage.run_dir import RunDir, atomic_write_parquet

ROOT = Path(__file__).resolve().parent.parent


def parent_config(tmp: Path, **over) -> dict:
    cfg = {"model": {"name": "mock"}, "memory": {"embedder": "hashing"}, "population": 12,
           "steps": 9, "checkpoint_every": 3, "keep_checkpoints": 10, "max_events_per_tick": 6,
           "run_id": "parent", "storage_dir": str(tmp / "dumps"), "seed": 4,
           "steering": {"coefficients": {"E": 0.3}},
           "optimization": {"reflect_every_n_ticks": 2}}
    cfg.update(over)
    return cfg


def run_all(config: dict) -> Path:
    """Run (or continue) a run to its end with the core runner, like the flow does."""
    cfg = load_config(config)
    plan = prepare_run(cfg, ROOT)
    backend, embedder = MockBackend(cfg.layers), HashingEmbedder()
    for start, end in plan.chunks:
        run_chunk(cfg, plan.run_dir, start, end, backend, embedder)
    finish_run(plan.run_dir)
    return Path(plan.run_dir)


def fork(parent: Path, at: int, *overrides: str, run_id: str | None = None) -> Path:
    plan = plan_fork(parent, at, list(overrides), run_id)
    cfg = load_config(plan.config)
    create_fork(plan, HashingEmbedder(), lambda: MockBackend(cfg.layers), ROOT)
    return run_all(plan.config)


def state_of_checkpoint(path: Path) -> tuple[dict, dict]:
    """A checkpoint's state (without the run's id and config hash) and its arrays."""
    from steertown.sim.checkpoint import _read

    state, arrays = _read(path)
    return {k: v for k, v in state.items() if k not in ("run_id", "config_hash")}, arrays


def uninterrupted_state(config: dict, tick: int, backend, tmp: Path) -> tuple[dict, dict]:
    """The parent's state after `tick`, from a fresh run of its config to that tick with no
    checkpoint or restore on the way (written as a checkpoint to compare like for like)."""
    from steertown.sim.checkpoint import save_checkpoint
    from steertown.sim.engine import Simulation

    cfg = load_config(config)
    sim = Simulation(cfg, backend, HashingEmbedder(), cfg.run_id)
    for t in range(1, tick + 1):
        sim.run_tick(t)
    return state_of_checkpoint(save_checkpoint(sim, RunDir(tmp / "reference"), 1))


def assert_same_state(fork_state: tuple[dict, dict], parent_state: tuple[dict, dict]) -> None:
    """Memories (texts, embeddings, importance), agents (coins, energy, plans...), ties,
    pending replies, transcripts and the label history, all equal."""
    (fs, fa), (ps, pa_) = fork_state, parent_state
    for key in ("tick", "agents", "memories", "memory_next_id", "ties", "pending_replies",
                "line_history", "transcripts"):
        assert fs[key] == ps[key], key
    assert fs == ps
    assert fa.keys() == pa_.keys()
    for key in fa:
        assert (fa[key] == pa_[key]).all(), key


def differing_ticks(a: Path, b: Path) -> set[int]:
    """Ticks from the first divergence on (analysis.diff), empty when identical."""
    first = first_divergence(a, b)
    return set() if first is None else {first[0]}


@pytest.fixture(scope="module")
def parent(tmp_path_factory) -> Path:
    return run_all(parent_config(tmp_path_factory.mktemp("fork")))


@pytest.mark.parametrize("at", [5, 4, 9])
def test_state_restored_at_t_is_the_parents_state(parent, at, tmp_path):
    """The fork's state at the start of tick `at` (its checkpoint after at-1, restored from
    the parent's checkpoint and replayed) equals the parent's state after at-1 as an
    uninterrupted run has it: memories, ties, coins, pending replies, label history."""
    config = parent_config(parent.parent.parent)
    plan = plan_fork(parent, at, [], f"state-{at}")
    create_fork(plan, HashingEmbedder(), lambda: MockBackend([16]), ROOT)
    from steertown.sim.checkpoint import checkpoint_path

    forked = state_of_checkpoint(checkpoint_path(RunDir(plan.run_dir), at - 1))
    reference = uninterrupted_state(config, at - 1, MockBackend([16]), tmp_path)
    assert forked[0]["ties"] and any(forked[0]["memories"].values())  # a state worth comparing
    assert_same_state(forked, reference)


@pytest.mark.parametrize("at,restored,replayed", [(5, 3, 1), (4, 3, 0), (1, 0, 0), (9, 6, 2)])
def test_fork_without_change_reproduces_the_parent(parent, at, restored, replayed):
    child = fork(parent, at, run_id=f"same-{at}")
    assert first_divergence(parent, child) is None  # every per-tick table, row for row
    pa_, ch = (pq.read_table(p / "agents.parquet").drop(["run_id"]) for p in (parent, child))
    assert pa_.equals(ch)
    m = RunDir(child).read_manifest()
    assert m["status"] == "complete" and m["ticks_done"] == 9
    assert m["fork"]["parent"] == "parent" and m["fork"]["at"] == at
    assert m["fork"]["changes"] == {}
    assert (m["fork"]["restored_from_checkpoint"], m["fork"]["replayed_ticks"]) == (restored,
                                                                                     replayed)
    ids = {r for t in schema.TABLES for r in RunDir(child).read_table(t).column("run_id")
           .to_pylist()}
    assert ids == {f"same-{at}"}  # copied rows carry the fork's run_id


def test_fork_with_a_changed_agent_diverges_only_from_t(parent):
    child = fork(parent, 5, "steering.agents.agent-001.E=1.0", "steering.strength=2.0",
                 run_id="changed")
    diff = differing_ticks(parent, child)
    assert diff and min(diff) >= 5
    msgs = RunDir(child).read_table("messages").to_pylist()
    mine = [m for m in msgs if m["agent_id"] == "agent-001"]
    assert mine and all(m["alpha_E"] == 2.0 for m in mine if m["tick"] >= 5)
    assert all(m["alpha_E"] != 2.0 for m in mine if m["tick"] < 5)
    changes = RunDir(child).read_manifest()["fork"]["changes"]
    assert changes == {"steering.agents.agent-001.E": {"from": None, "to": 1.0},
                       "steering.strength": {"from": 1.0, "to": 2.0}}


def test_fork_can_change_the_mode(parent):
    child = fork(parent, 7, "steering.mode=off", run_id="off-at-7")
    msgs = RunDir(child).read_table("messages").to_pylist()
    assert {m["steering_mode"] for m in msgs if m["tick"] >= 7} == {"off"}
    assert {m["steering_mode"] for m in msgs if m["tick"] < 7} == {"vectors"}
    assert min(differing_ticks(parent, child)) >= 7


def test_replay_that_disagrees_with_the_parent_is_refused(tmp_path):
    par = run_all(parent_config(tmp_path))
    f = RunDir(par).tick_file("messages", 4)
    t = pq.read_table(f)
    content = t.column("content").to_pylist()
    content[0] = content[0] + " (edited)"
    atomic_write_parquet(f, t.set_column(t.column_names.index("content"), "content",
                                         __import__("pyarrow").array(content)))
    with pytest.raises(ForkError, match="gave other messages rows at tick 4"):
        fork(par, 5, run_id="bad")
    assert not (tmp_path / "dumps" / "bad").exists()
    assert not any(p.name.startswith(".forking") for p in (tmp_path / "dumps").iterdir())


def test_fork_of_a_fork_before_its_fork_point_is_refused(parent):
    child = fork(parent, 6, "steering.strength=0.5", run_id="first")
    with pytest.raises(ForkError, match="before first's own fork point 6; fork its parent parent"):
        plan_fork(child, 4, [])
    grandchild = fork(child, 8, run_id="second")
    assert differing_ticks(child, grandchild) == set()


@pytest.mark.parametrize("args,message", [
    (["--at", "0"], "--at: 0 is out of range; allowed: 1..10 (parent has 9 completed ticks)"),
    (["--at", "11"], "--at: 11 is out of range; allowed: 1..10"),
    (["--at", "10"], "--at: 10 is after the fork's last tick (steps=9); set steps=N with N >= 10"),
    (["--at", "3", "model.name=hf"], "model.name: cannot change in a fork"),
    (["--at", "3", "seed=2"], "seed: cannot change in a fork"),
    # A fork is judged by its parent's thresholds (issue 19): not even to tighten them.
    (["--at", "3", "verification.replay_tolerance=10"],
     "verification.replay_tolerance: cannot change in a fork"),
    (["--at", "3", "steering.agents.agent-012.A=0.5"],
     "steering.agents.agent-012: unknown agent id; allowed: agent-000..agent-011"),
    (["--at", "3", "steering.mode=vector"], "steering.mode: 'vector' is out of range"),
    (["--at", "3", "steering.strength"], "override 'steering.strength': expected key=value"),
    (["--at", "3", "--run-id", "parent"], "--run-id: parent already exists"),
    (["--at", "3", "--run-id", "../x"], "run_id: '../x' is out of range"),
])
def test_bad_fork_requests_get_one_line(parent, capsys, args, message):
    assert cli(["fork", str(parent), "--no-run", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_fork_of_a_missing_run_is_one_line(tmp_path, capsys):
    assert cli(["fork", str(tmp_path / "nope"), "--at", "2"]) == 2
    assert "no such run directory" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_fork_runs_through_the_flow_and_mlflow_records_it(tmp_path):
    """`python flows/run.py` parent (placebo mode), then `steertown fork` through the flow."""
    dumps, db = tmp_path / "dumps", tmp_path / "mlflow.db"
    common = ["model=mock", "memory.embedder=hashing", "population=6", "steps=6",
              "checkpoint_every=2", "max_events_per_tick=4", f"storage_dir={dumps}",
              f"reports_dir={tmp_path / 'reports'}", f"tracking.tracking_uri=sqlite:///{db}",
              "color=false", "live=false", "verification.model_checks=false"]
    r = subprocess.run([sys.executable, str(ROOT / "flows" / "run.py"), "run_id=p",
                        "steering.mode=placebo", *common], capture_output=True, text=True,
                       timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    m = RunDir(dumps / "p").read_manifest()
    assert m["steering"]["mode"] == "placebo" and "placebo" in m["model"]["vector_id"]
    r = subprocess.run([sys.executable, "-m", "steertown", "fork", str(dumps / "p"), "--at", "4",
                        "--run-id", "f", "+steering.agents.agent-002.A=-0.9"],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    fm = RunDir(dumps / "f").read_manifest()
    assert fm["status"] == "complete" and fm["fork"]["at"] == 4
    assert fm["overrides"] == ["+steering.agents.agent-002.A=-0.9"]
    assert min(differing_ticks(dumps / "p", dumps / "f"), default=99) >= 4
    from mlflow.tracking import MlflowClient

    runs = {x.data.tags["run_id"]: x for x in
            MlflowClient(tracking_uri=f"sqlite:///{db}").search_runs(["1"])}
    tags = runs["f"].data.tags
    assert (tags["fork_parent"], tags["fork_at"], tags["steering_mode"]) == ("p", "4", "placebo")
    assert "steering.agents.agent-002.A" in json.loads(tags["fork_changes"])
    assert runs["p"].data.tags["steering_mode"] == "placebo"


@pytest.mark.model
def test_real_model_fork_replays_exactly_and_reproduces_the_parent(tmp_path):
    """SmolLM2, 4 agents x 3 ticks: the fork at 2 replays tick 1 on the model (no checkpoint
    before it), must match the parent's rows, and continues to the same rows."""
    from tests.model_fixtures import real_cfg, shared_backend

    backend = shared_backend()
    config = real_cfg().to_dict()
    config.update(population=4, steps=3, max_events_per_tick=4, checkpoint_every=2, seed=2,
                  run_id="real-parent", storage_dir=str(tmp_path / "dumps"),
                  memory={"embedder": "hashing"}, verification={"enabled": False})
    config["steering"]["coefficients"] = {"E": 0.5, "A": -0.5}

    def run(cfg_dict):
        cfg = load_config(cfg_dict)
        plan = prepare_run(cfg, ROOT)
        for start, end in plan.chunks:
            run_chunk(cfg, plan.run_dir, start, end, backend, HashingEmbedder())
        finish_run(plan.run_dir)
        return Path(plan.run_dir)

    par = run(config)
    plan = plan_fork(par, 2, [], "real-fork")
    create_fork(plan, HashingEmbedder(), lambda: backend, ROOT)
    assert RunDir(plan.run_dir).read_manifest()["fork"]["replayed_ticks"] == 1
    from steertown.sim.checkpoint import checkpoint_path

    assert_same_state(state_of_checkpoint(checkpoint_path(RunDir(plan.run_dir), 1)),
                      uninterrupted_state(config, 1, backend, tmp_path))
    child = run(plan.config)
    assert differing_ticks(par, child) == set()
    assert RunDir(child).read_table("messages").num_rows > 0


def test_continue_entry_point_refuses_bad_input_in_one_line(tmp_path):
    for argv in ([], [str(tmp_path / "nope")]):
        r = subprocess.run([sys.executable, str(ROOT / "flows" / "continue_run.py"), *argv],
                           capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
