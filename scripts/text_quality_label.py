"""Label the lines of a `scripts/text_quality_run.py` output with agents.text_quality and
print the label breakdown, the usable share, the Talk share where someone was present,
and a seeded random sample of lines (with cosines) to read by hand:
    python scripts/text_quality_label.py OUT_DIR [--sample 40] [--seed 0]
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--sample", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--embedder", default="minilm")
    ap.add_argument("--exclude-seed", type=int, default=None,
                    help="leave out the lines a sample with this seed would show (held-out read)")
    args = ap.parse_args()
    import numpy as np

    from steertown.agents.text_quality import QualityLabeler, situation_text, usable_share
    from steertown.inference import get_embedder
    from steertown.world.actions import parse_action
    from steertown.world.town import Town

    rows = [json.loads(x) for x in (args.out / "situations.jsonl").read_text().splitlines()]
    emb = get_embedder(args.embedder)
    labeler = QualityLabeler(emb)
    town = Town(num_homes=64)
    items = []
    for r in rows:
        act = parse_action(r["content"], [], town)
        text = act.text if r["action_type"] in ("TALK", "WORK") else ""
        heard = r["heard"][-1].split(": ", 1)[-1] if r["heard"] else ""
        sit = situation_text(r["location"], r["description"], r["work"], r["goal"], heard)
        row: dict = {}
        labeler.submit(row, r["agent_id"], r["action_type"], text, sit,
                       [h.split(": ", 1)[-1] for h in r["heard"]])
        items.append((r, row, text, sit))
        if len(items) == len(rows) or rows[len(items)]["tick"] != r["tick"]:
            labeler.flush()
    free = [(r, row, t, s) for r, row, t, s in items if row["quality"] != "none"]
    e = emb.embed([t for _, _, t, _ in free] + [s for _, _, _, s in free])
    cos = np.sum(e[:len(free)] * e[len(free):], axis=1)
    labels = [row["quality"] for _, row, _, _ in items]
    print("actions:", collections.Counter(r["action_type"] for r in rows))
    print("labels:", collections.Counter(x for x in labels if x != "none"))
    print(f"free text: {len(free)}  usable share: {usable_share(labels):.3f}")
    import pyarrow.parquet as pq

    dec = pq.read_table(args.out / "run" / "decisions").to_pylist()
    met = {(d["tick"], d["event_id"]) for d in dec
           if any(o.startswith("Talk ") for o in d["options"])}
    talk = sum(r["action_type"] == "TALK" for r in rows if (r["tick"], r["event_id"]) in met)
    print(f"Talk share where someone was present: {talk}/{len(met)} = {talk / max(1, len(met)):.3f}")
    print(f"mean tokens_in per action: {np.mean([r['tokens_in'] for r in rows]):.1f}")
    pool = range(len(free))
    if args.exclude_seed is not None:
        seen = set(random.Random(args.exclude_seed).sample(pool, min(args.sample, len(free))))
        pool = [i for i in pool if i not in seen]
    rng = random.Random(args.seed)
    idx = sorted(rng.sample(list(pool), min(args.sample, len(pool))))
    for i in idx:
        r, row, t, _ = free[i]
        print(f"[{i:3d}] {row['quality']:13s} {cos[i]:+.2f} {r['location']:16s} {r['content']!r}")


if __name__ == "__main__":
    main()
