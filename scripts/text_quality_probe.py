"""Replay the situations of a recorded run with today's prompt wording, without a full
simulation: parse each logged action prompt (decisions table) back into its parts,
render it again with agents.prompts, and measure (1) the model's action probabilities
over the constrained options (steered, temperature-scaled like sampling) and (2) the
quality labels of freshly generated free text.
    python scripts/text_quality_probe.py RUN_DIR [--generate 48] [--seed 0]
RUN_DIR is a `scripts/text_quality_run.py` output (its run/decisions table).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import random
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.workload import fast_config  # noqa: E402  (sets the offline environment)

_SECTION = re.compile(r"^(Recently said here|You remember):$")


def parse_prompt(user: str) -> dict:
    """The parts of a logged action prompt (any wording that keeps the section headers)."""
    out = {"others": [], "transcript": [], "memories": [], "plan": "", "location": ""}
    section = None
    for line in user.splitlines():
        if m := re.search(r"You are at ([a-z_0-9]+):", line):
            out["location"] = m.group(1)
        elif line.startswith("Here with you: "):
            out["others"] = line[len("Here with you: "):].rstrip(".").split(", ")
        elif m := _SECTION.match(line):
            section = m.group(1)
        elif line.startswith("- ") and section:
            item = line[2:]
            if section == "Recently said here":
                q = re.match(r'(.+?) said: "(.*)"$', item)
                out["transcript"].append(f"{q.group(1)}: {q.group(2)}" if q else item)
            else:
                out["memories"].append(item)
        elif line.startswith("Your plan: "):
            out["plan"] = line[len("Your plan: "):]
            section = None
        else:
            section = None
    return out


def cost(backend, cfg, decisions: list[dict], new: list) -> None:
    """Model seconds and tokens per action, logged prompts (as generated then: old wording,
    penalty over prompt tokens, no sentence stop) vs the re-rendered ones, alternating."""
    import time

    from steertown.inference.backend import GenerationRequest
    from steertown.inference.batching import BatchStats, generate_all

    old = [GenerationRequest(r.request_id, d["system"], d["user"], r.steering, r.max_new_tokens,
                             r.seed, "action", r.token_caps, True, tuple(d["options"]))
           for d, r in zip(decisions, new, strict=True)]
    inf = cfg.inference
    conds = {"old": (old, True, False), "new": (new, False, True)}
    totals = {k: [0.0, 0, 0] for k in conds}
    for rep in range(3):  # rep 0 warms the per-agent prefix caches and is not counted
        for name, (reqs, penalize, sentence) in conds.items():
            inf.penalize_prompt_tokens, inf.stop_at_sentence = penalize, sentence
            t0 = time.perf_counter()
            out = generate_all(backend, reqs, cfg.optimization.batch_size, BatchStats())
            if rep:
                totals[name][0] += time.perf_counter() - t0
                totals[name][1] += sum(g.tokens_in for g in out)
                totals[name][2] += sum(g.tokens_out for g in out)
    for name, (sec, tin, tout) in totals.items():
        n = 2 * len(decisions)
        print(f"{name}: {sec / n:.3f} s/action, tokens in {tin / n:.1f}, out {tout / n:.1f}")
    print(f"new/old seconds ratio: {totals['new'][0] / totals['old'][0]:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--generate", type=int, default=48, help="situations to generate for")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cost", type=int, default=0,
                    help="instead: time N logged prompts (old wording and decoding) against the "
                         "same situations re-rendered (new), alternating, in this process")
    ap.add_argument("--met-only", action="store_true", help="only situations with company")
    ap.add_argument("--limit", type=int, default=0, help="situations for the action shares (0 = all)")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    import numpy as np
    import pyarrow.parquet as pq
    import torch

    from steertown.agents import prompts
    from steertown.agents.text_quality import QualityLabeler, situation_text, usable_share
    from steertown.inference import get_backend, get_embedder
    from steertown.inference.backend import GenerationRequest
    from steertown.inference.batching import BatchStats, generate_all
    from steertown.sim.engine import Simulation
    from steertown.world.actions import parse_action

    cfg = fast_config(["model.num_threads=1", *args.overrides])
    backend = get_backend(cfg)
    emb = get_embedder(cfg.memory.embedder)
    sim = Simulation(cfg, backend, emb, "probe")
    decisions = pq.read_table(args.run / "run" / "decisions").to_pylist()
    reqs, kinds, sits = [], [], []
    for d in decisions:
        agent = dataclasses.replace(sim.by_id[d["agent_id"]])
        p = parse_prompt(d["user"])
        agent.location, agent.plan = p["location"], p["plan"]
        user = prompts.action_prompt(agent, sim.town, p["others"], p["transcript"],
                                     p["memories"], d["tick"])
        options = prompts.action_options(agent, sim.town, p["others"])
        steering = {t: d[f"alpha_{t}"] for t in "EACON"}
        reqs.append(GenerationRequest(
            f"p{d['tick']}-{d['event_id']}", prompts.persona(agent), user, steering,
            cfg.inference.max_new_tokens, d["seed"], "action",
            {k: v for k, v in cfg.inference.max_new_tokens_by_action.items() if k != "REFLECT"},
            True, options))
        loc = sim.town.locations[agent.location]
        heard = [t.split(": ", 1)[-1] for t in p["transcript"]]
        sits.append((agent.agent_id, situation_text(loc.name, loc.description, loc.work,
                                                    agent.goal, heard[-1] if heard else ""),
                     heard))
        kinds.append(bool(p["others"]))
    if args.cost:
        step = max(1, len(reqs) // args.cost)  # spread over the run
        cost(backend, cfg, decisions[::step][:args.cost], reqs[::step][:args.cost])
        return
    # (1) action probabilities: first option token, steered, temperature as in sampling
    tok = backend.tokenizer
    first = {w: tok(w, add_special_tokens=False)["input_ids"][0]
             for w in ("Move", "Talk", "Work", "Rest", "Help", "Invite", "Accept")}
    probs = collections.defaultdict(list)
    inv = {v: k for k, v in first.items()}
    pool = [i for i in range(len(reqs)) if kinds[i] or not args.met_only]
    pick = sorted(random.Random(args.seed).sample(pool, min(len(pool), args.limit or len(pool))))
    for r, met in ((reqs[i], kinds[i]) for i in pick):  # one row at a time: no padding
        ids = torch.tensor([backend.prompt_ids(r.system, r.user)])
        with torch.no_grad(), backend.steered([r.steering]):
            row = backend.model(input_ids=ids, use_cache=False, logits_to_keep=1).logits[0, -1]
        allowed = sorted({first[o.split(" ")[0].rstrip(":")] for o in r.options})
        p = torch.softmax(row.float()[allowed] / max(cfg.inference.temperature, 1e-6), -1)
        for t, pr in zip(allowed, p.tolist(), strict=True):
            probs[(met, inv[t])].append(pr)
    for met in (False, True):
        n = len([i for i in pick if kinds[i] == met])
        share = {w: round(sum(probs[(met, w)]) / max(1, n), 3) for w in first}
        print(f"expected action shares ({'someone present' if met else 'alone'}, n={n}): {share}")
    toks = [backend.count_prompt_tokens(r) for r in reqs]
    print(f"mean prompt tokens: {np.mean(toks):.1f}")
    if not args.generate:
        return
    # (2) generate free text for a seeded sample of situations
    idx = sorted(random.Random(args.seed).sample(range(len(reqs)), min(args.generate, len(reqs))))
    sample = [reqs[i] for i in idx]
    gens = generate_all(backend, sample, cfg.optimization.batch_size, BatchStats())
    labeler = QualityLabeler(emb)
    rows = []
    for i, g in zip(idx, gens, strict=True):
        act = parse_action(g.text, [], sim.town)
        row = {"text": g.text}
        labeler.submit(row, sits[i][0], act.action_type, act.text, sits[i][1], sits[i][2])
        rows.append(row)
    labeler.flush()
    labels = [r["quality"] for r in rows]
    print("generated actions:", collections.Counter(parse_action(r["text"], [], sim.town)
                                                   .action_type for r in rows))
    print("labels:", collections.Counter(x for x in labels if x != "none"),
          f"usable share: {usable_share(labels)}")
    for r in rows:
        print(f"  {r['quality']:13s} {r['text']!r}")


if __name__ == "__main__":
    main()
