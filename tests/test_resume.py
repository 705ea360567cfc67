"""Crash safety: kill -9 at random points, resume, and get the uninterrupted run's rows.

Also: corrupt checkpoints, concurrent writers, config changes on resume, disk full.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest

from steertown.config import ConfigError
from steertown.config_loading import load_config
from steertown.sim.checkpoint import list_checkpoints
from steertown.sim.runner import check_run, prepare_run, run_chunk
from steertown.storage import schema
from steertown.storage.lock import RunLock, RunLockedError
from steertown.storage.run_dir import RunDir

ROOT = Path(__file__).resolve().parent.parent
DRIVER = ROOT / "tests" / "drivers" / "simulate.py"


def write_config(tmp: Path, run_id: str, **over) -> Path:
    cfg = {"model": {"name": "mock"}, "memory": {"embedder": "hashing"}, "population": 24,
           "steps": 40, "checkpoint_every": 5, "max_events_per_tick": 8, "run_id": run_id,
           "storage_dir": str(tmp / "dumps"), "steering": {"coefficients": {"E": 0.4}},
           "optimization": {"reflect_every_n_ticks": 3}}
    cfg.update(over)
    path = tmp / f"{run_id}.json"
    path.write_text(json.dumps(cfg))
    return path


def run_driver(config: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(DRIVER), str(config)], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def table_rows(run_dir: Path, table: str) -> list[dict]:
    t: pa.Table = RunDir(run_dir).read_table(table)
    keep = [c for c in t.column_names if not c.endswith("_seconds")]
    return t.select(keep).to_pylist()


# Floats compared to a tolerance, every other column exactly. The real model's decision
# log-probabilities after a resume differ from the uninterrupted run's by ~3e-6 (measured:
# tokens, texts and choices identical): the resumed process starts with a cold per-agent
# prefix KV cache, so its first prefills take the other (full-prompt) path.
APPROX_COLUMNS = {"option_logprob": 1e-4}


def assert_same_run(a: Path, b: Path) -> None:
    for table in (*schema.TABLES, "agents"):
        ra, rb = table_rows(a, table), table_rows(b, table)
        for r in ra + rb:
            r.pop("run_id", None)
        assert len(ra) == len(rb), f"{table} differs in rows"
        for x, y in zip(ra, rb, strict=True):
            for col, tol in APPROX_COLUMNS.items():
                if col in x and isinstance(x[col], float) and isinstance(y[col], float):
                    assert y.pop(col) == pytest.approx(x.pop(col), abs=tol), (table, col)
        assert ra == rb, f"{table} differs"


def kill_at_random(config: Path, run_dir: Path, rng: random.Random, max_ticks: int) -> bool:
    """Start the driver, kill -9 it after a random number of completed ticks (and a random
    extra delay, so kills land inside tick and checkpoint writes). True if it was killed."""
    target = rng.randint(0, max_ticks - 1)
    proc = subprocess.Popen([sys.executable, str(DRIVER), str(config)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline:
        if len(RunDir(run_dir).completed_ticks()) >= target:
            time.sleep(rng.random() * 0.01)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.0005)
    proc.wait()
    return False


@pytest.fixture(scope="module")
def mock_reference(tmp_path_factory) -> Path:
    """The uninterrupted mock run every seed's killed run is compared with (one run: the
    victims' configs differ from it only in run_id, which the comparison drops)."""
    tmp = tmp_path_factory.mktemp("resume-ref")
    r = run_driver(write_config(tmp, "ref"))
    assert r.returncode == 0, r.stderr
    return tmp / "dumps" / "ref"


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kill_minus_9_then_resume_gives_identical_rows_mock(mock_reference, tmp_path, seed):
    cfg = write_config(tmp_path, "victim")
    run_dir = tmp_path / "dumps" / "victim"
    rng = random.Random(seed)
    kills = 0
    for _ in range(3):  # up to three crashes in one run
        kills += kill_at_random(cfg, run_dir, rng, 40)
    r = run_driver(cfg)
    assert r.returncode == 0, r.stderr
    assert kills >= 1
    assert RunDir(run_dir).read_manifest()["status"] == "complete"
    assert RunDir(run_dir).completed_ticks() == list(range(1, 41))
    assert_same_run(mock_reference, run_dir)
    assert run_driver(cfg).stdout.strip() == "complete"  # a finished run does nothing


@pytest.mark.model
@pytest.mark.slow
def test_kill_then_resume_is_exact_on_the_real_model_with_sampling(tmp_path):
    over = dict(model={"name": "smollm2", "num_threads": 1, "backend": "torch"}, population=4, steps=6, checkpoint_every=2,
                max_events_per_tick=3, inference={"max_new_tokens": 8, "temperature": 0.8},
                optimization={"reflect_every_n_ticks": 3, "batch_size": 4})
    ref = write_config(tmp_path, "ref", **over)
    assert run_driver(ref).returncode == 0
    cfg = write_config(tmp_path, "victim", **over)
    run_dir = tmp_path / "dumps" / "victim"
    # kill -9 once a checkpoint exists and a tick after it is written (in a later tick)
    proc = subprocess.Popen([sys.executable, str(DRIVER), str(cfg)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 900
    while proc.poll() is None and time.time() < deadline:
        if list_checkpoints(RunDir(run_dir)) and len(RunDir(run_dir).completed_ticks()) >= 3:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    ckpts = list_checkpoints(RunDir(run_dir))
    assert ckpts, "killed before any checkpoint existed"
    last = int(ckpts[-1].stem.rsplit("_t", 1)[1])
    assert last >= 2 and RunDir(run_dir).read_manifest()["status"] != "complete"
    r = run_driver(cfg)
    assert r.returncode == 0, r.stderr
    # the resume restored that checkpoint (not a restart from tick 0)
    first_chunk = r.stdout.splitlines()[0]
    assert first_chunk.endswith(f"restored_from {last}") and first_chunk.startswith(
        f"chunk {last}-"), r.stdout
    assert_same_run(tmp_path / "dumps" / "ref", run_dir)


def _mock_cfg(tmp_path, run_id, **over):
    return load_config(json.loads(write_config(tmp_path, run_id, **over).read_text()))


def _run_all(cfg):
    from steertown.inference import get_backend, get_embedder

    plan = prepare_run(cfg, ROOT)
    for s, e in plan.chunks:
        run_chunk(cfg, plan.run_dir, s, e, get_backend(cfg), get_embedder("hashing"))
    return Path(plan.run_dir)


def test_corrupt_checkpoint_falls_back_to_the_previous_good_one(tmp_path, caplog):
    ref = _run_all(_mock_cfg(tmp_path, "ref", steps=20))
    cfg = _mock_cfg(tmp_path, "bad", steps=20)
    run_dir = _run_all(cfg)
    ckpts = list_checkpoints(RunDir(run_dir))
    assert [c.name for c in ckpts] == ["ckpt_t00010.safetensors", "ckpt_t00015.safetensors",
                                       "ckpt_t00020.safetensors"]
    data = bytearray(ckpts[-1].read_bytes())
    data[len(data) // 2] ^= 0xFF  # flip a byte in the tensor data: checksum mismatch
    ckpts[-1].write_bytes(bytes(data))
    ckpts[-2].write_bytes(ckpts[-2].read_bytes()[:100])  # truncated
    from steertown.inference import get_backend, get_embedder

    # resume the last chunk from tick 15: both newer checkpoints are bad -> tick 10 is used
    out = run_chunk(cfg, run_dir, 15, 20, get_backend(cfg), get_embedder("hashing"))
    assert out["restored_from"] == 10
    assert "checksum mismatch" in caplog.text and "unreadable" in caplog.text
    assert_same_run(ref, run_dir)


def test_resume_refuses_a_changed_config_listing_the_keys(tmp_path):
    cfg = _mock_cfg(tmp_path, "r1", steps=10)
    _run_all(cfg)
    changed = _mock_cfg(tmp_path, "r1", steps=10, population=30, seed=9)
    with pytest.raises(ConfigError, match="population, seed"):
        check_run(changed)
    with pytest.raises(ConfigError, match="overwrite=true"):
        check_run(_mock_cfg(tmp_path, "r1", steps=10, resume=False))
    check_run(_mock_cfg(tmp_path, "r1", steps=10, overwrite=True, seed=9))  # allowed


HOLD = """
import sys, time
from steertown.storage.lock import RunLock
RunLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(60)
"""


def test_second_writer_is_refused_until_the_holder_dies(tmp_path):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=f"in use by process {holder.pid}"):
            RunLock(run_dir).acquire()
        with pytest.raises(RunLockedError):
            RunLock(run_dir).check()
    finally:
        holder.kill()  # kill -9: nothing of the holder's runs to clean up
        holder.wait()
    RunLock(run_dir).check()  # the kernel dropped the dead holder's lock
    with RunLock(run_dir) as lock, RunLock(run_dir) as inner:  # re-entrant in one process
        assert lock.owned and inner.owned
        assert (run_dir / ".lock").read_text().endswith(f":{os.getpid()}")
    assert (run_dir / ".lock").read_text() == ""  # released: no holder named


RACE = """
import sys, time
from steertown.storage.lock import RunLock, RunLockedError
time.sleep(float(sys.argv[2]) - time.time())  # all start together
try:
    RunLock(sys.argv[1]).acquire()
except RunLockedError:
    print("refused", flush=True)
else:
    print("won", flush=True)
    time.sleep(3)
"""


def test_a_left_over_lock_file_is_taken_by_exactly_one_of_many(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".lock").write_text("otherhost:1")  # left by a process that is gone
    start = str(time.time() + 3)
    procs = [subprocess.Popen([sys.executable, "-c", RACE, str(run_dir), start],
                              stdout=subprocess.PIPE, text=True) for _ in range(6)]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert sorted(outs) == ["refused"] * 5 + ["won"]


def test_concurrent_driver_processes_one_is_refused(tmp_path):
    cfg = write_config(tmp_path, "shared", steps=400, population=60)
    procs = [subprocess.Popen([sys.executable, str(DRIVER), str(cfg)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes[0] == 0 and codes[1] != 0, outs
    assert any("in use by process" in err for _, err in outs)


def test_disk_full_during_tick_write_loses_nothing_already_written(tmp_path, monkeypatch):
    cfg = _mock_cfg(tmp_path, "full", steps=10)
    from steertown.inference import get_backend, get_embedder
    from steertown.storage import run_dir as rd

    plan = prepare_run(cfg, ROOT)
    run_chunk(cfg, plan.run_dir, 0, 5, get_backend(cfg), get_embedder("hashing"))
    real = rd.atomic_write_bytes
    calls = {"n": 0}

    def full_disk(path, data):
        calls["n"] += 1
        if calls["n"] == 3:  # in the middle of a tick's tables
            raise OSError(28, "No space left on device")
        real(path, data)

    monkeypatch.setattr(rd, "atomic_write_bytes", full_disk)
    with pytest.raises(OSError, match="No space left"):
        run_chunk(cfg, plan.run_dir, 5, 10, get_backend(cfg), get_embedder("hashing"))
    monkeypatch.setattr(rd, "atomic_write_bytes", real)
    run = RunDir(plan.run_dir)
    assert not list(run.path.rglob("*.tmp"))  # no partial files left behind
    assert run.completed_ticks() == [1, 2, 3, 4, 5]
    run_chunk(cfg, plan.run_dir, 5, 10, get_backend(cfg), get_embedder("hashing"))
    ref = _run_all(_mock_cfg(tmp_path, "full_ref", steps=10))
    assert_same_run(ref, run.path)
