"""Independent runs on the cores: two 1-thread processes vs one process on every core.

`bench/run.py --processes` (or `python bench/processes.py`): a study runs many independent
cells. Is it faster to run two cells at once with `model.num_threads=1` each, or one after
another with `model.num_threads=0` (every core)? Both variants simulate the same work, the
first `--ticks` ticks of the fast arm (32 agents) for seeds 0 and 1, on the default backend
(auto), models loaded first and excluded:

- one process, all cores: seed 0's ticks, then seed 1's (model loaded once);
- two processes, one thread each: seed 0 and seed 1 at the same time, from one start
  signal given after both have loaded; wall time until both are done.

Ratio = one-process wall / two-process wall (above 1: two processes are faster).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

SEEDS = (0, 1)


def worker(seeds: list[int], threads: int, ticks: int, go: Path, out: Path) -> None:
    """Load the backend, say ready, wait for `go`, simulate each seed's ticks; write times."""
    from bench.workload import fast_config, simulate
    from steertown.inference import get_backend, get_embedder

    cfgs = [fast_config([f"seed={s}", f"model.num_threads={threads}"]) for s in seeds]
    backend, embedder = get_backend(cfgs[0]), get_embedder(cfgs[0].memory.embedder)
    Path(f"{out}.ready").write_text("1")
    while not go.exists():
        time.sleep(0.05)
    start = time.time()
    tick_seconds = []
    with tempfile.TemporaryDirectory() as tmp:
        for cfg in cfgs:
            res = simulate(cfg, backend, embedder, ticks, Path(tmp) / f"s{cfg.seed}",
                           checkpoint_every=ticks)
            tick_seconds += [t["seconds"] for t in res["per_tick"]]
    out.write_text(json.dumps({"start": start, "end": time.time(), "seeds": seeds,
                               "threads": threads, "backend": backend.describe().get("backend"),
                               "tick_seconds": tick_seconds}))


def _launch(seeds: list[int], threads: int, ticks: int, go: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, "--worker", ",".join(map(str, seeds)),
                             str(threads), str(ticks), str(go), str(out)], cwd=ROOT)


def _run(groups: list[tuple[list[int], int]], ticks: int, tmp: Path, tag: str) -> dict:
    """Start one worker per group, release them together, return the wall time and records."""
    go = tmp / f"go-{tag}"
    outs = [tmp / f"{tag}-{i}.json" for i in range(len(groups))]
    procs = [_launch(seeds, threads, ticks, go, out)
             for (seeds, threads), out in zip(groups, outs, strict=True)]
    while not all(Path(f"{o}.ready").exists() for o in outs):
        if any(p.poll() not in (None, 0) for p in procs):
            raise RuntimeError(f"a {tag} worker failed while loading")
        time.sleep(0.2)
    t_go = time.time()
    go.write_text("1")
    for p in procs:
        if p.wait() != 0:
            raise RuntimeError(f"a {tag} worker failed")
    recs = [json.loads(o.read_text()) for o in outs]
    return {"wall": max(r["end"] for r in recs) - t_go, "records": recs}


def measure(ticks: int, table) -> dict:
    """Both variants, one after the other; rows into `table`; the facts as a dict."""
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        one = _run([(list(SEEDS), 0)], ticks, tmp, "one")
        two = _run([([s], 1) for s in SEEDS], ticks, tmp, "two")
    n = ticks * len(SEEDS)
    backend = one["records"][0]["backend"]
    table.add("processes", f"1 process, all cores: {n} ticks ({backend})", one["wall"], 1.0,
              f"{n / one['wall']:.3f} ticks/s")
    ratio = one["wall"] / two["wall"]
    table.add("processes", f"2 processes x 1 thread: {n} ticks ({backend})", two["wall"], ratio,
              f"{n / two['wall']:.3f} ticks/s; ratio = throughput vs 1 process")
    return {"ticks_per_run": ticks, "runs": len(SEEDS), "backend": backend,
            "one_process_wall_s": round(one["wall"], 1),
            "two_processes_wall_s": round(two["wall"], 1),
            "throughput_ratio_two_vs_one": round(ratio, 3),
            "tick_seconds": {"one": [round(x, 2) for x in one["records"][0]["tick_seconds"]],
                             "two": [[round(x, 2) for x in r["tick_seconds"]]
                                     for r in two["records"]]}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", nargs=5, metavar=("SEEDS", "THREADS", "TICKS", "GO", "OUT"))
    ap.add_argument("--ticks", type=int, default=5, help="ticks per run (default 5)")
    args = ap.parse_args()
    if args.worker:
        seeds, threads, ticks, go, out = args.worker
        worker([int(s) for s in seeds.split(",")], int(threads), int(ticks), Path(go), Path(out))
        return 0
    from bench.report import Table

    print(json.dumps(measure(args.ticks, Table()), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
