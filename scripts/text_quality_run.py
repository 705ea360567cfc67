"""Run a short seeded fast-arm simulation of the real model and keep, per action message,
what the agent saw (place, goal, the line it was answering) next to what it said.

Used to measure the share of usable free text before and after prompt changes
(docs/text_quality.md). Writes a normal run directory plus `situations.jsonl`:
    python scripts/text_quality_run.py OUT_DIR --ticks 20 [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.workload import fast_config  # noqa: E402  (sets the offline environment)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--ticks", type=int, default=20)
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. seed=1")
    args = ap.parse_args()
    from steertown.inference import get_backend, get_embedder
    from steertown.sim.engine import Simulation
    from steertown.storage.run_dir import RunDir

    cfg = fast_config(["model.num_threads=1", *args.overrides], tmp=str(args.out))
    args.out.mkdir(parents=True, exist_ok=True)
    backend = get_backend(cfg)
    sim = Simulation(cfg, backend, get_embedder(cfg.memory.embedder), args.out.name)
    run = RunDir(args.out / "run")
    run.path.mkdir(parents=True, exist_ok=True)
    with open(args.out / "situations.jsonl", "w") as fh:
        for t in range(1, args.ticks + 1):
            heard = {k: list(v) for k, v in sim.transcripts.items()}
            t0 = time.perf_counter()
            res = sim.run_tick(t)
            run.write_tick(t, res.rows())
            acts = {a["event_id"]: a for a in res.actions}
            for m in res.messages:
                if m["kind"] != "action":
                    continue
                a = sim.by_id[m["agent_id"]]
                loc = sim.town.locations[m["location"]]
                fh.write(json.dumps({
                    "tick": t, "event_id": m["event_id"], "agent_id": m["agent_id"],
                    "content": m["content"], "action_type": acts[m["event_id"]]["action_type"],
                    "success": acts[m["event_id"]]["success"],
                    "location": loc.name, "description": loc.description, "work": loc.work,
                    "goal": a.goal, "heard": heard.get(loc.name, []),
                    "tokens_in": m["tokens_in"], "tokens_out": m["tokens_out"],
                    "quality": m.get("quality")}) + "\n")
            fh.flush()
            print(f"tick {t}: {time.perf_counter() - t0:.1f}s", flush=True)


if __name__ == "__main__":
    main()
