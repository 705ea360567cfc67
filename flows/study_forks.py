"""`python flows/study.py studies/<name> --stage forks`: the study's what-if forks.

For each seed of the study file's `forks` (default: the E of agent-000 at +1 and -1),
the `vectors` run of that seed is forked at tick `at` (default: the middle tick) with the
agent's coefficient set to each value (`steertown.sim.fork`, as `steertown fork` does),
and each fork runs to the end through the run flow (a resume from its checkpoint at
T-1). Resumable like the other stages: a complete fork is skipped, an unfinished one
resumes. Then, per seed, `steertown diff` between the two forks (stored in both, as the
CLI does) and the agent's and its neighbours' measures from T on
(`analysis.what_if`), written by code to `<results_dir>/forks.md` and `forks.csv`.
"""

from __future__ import annotations

from pathlib import Path

from flows.environment import PROJECT_ROOT
from flows.study_spec import StudySpec
from flows.study_stages import cell_state, failure, stage_command
from steertown.config import ConfigError
from steertown.storage.run_dir import RunDir, atomic_write_bytes


def fork_run_id(parent_id: str, at: int, agent: str, trait: str, value: float) -> str:
    """`<parent>-fork-t20-agent-000-Ep1` (p/m for the sign: run ids have no '+')."""
    sign = "p" if value >= 0 else "m"
    return f"{parent_id}-fork-t{at}-{agent}-{trait}{sign}{abs(value):g}".replace(".", "_")


def _run_fork(parent_dir: Path, at: int, override: str, run_id: str, say) -> str:
    """Create (unless it exists) and run (unless complete) one fork; return its status."""
    from steertown.inference import get_backend, get_embedder
    from steertown.sim.fork import create_fork, plan_fork

    target = parent_dir.parent / run_id
    if RunDir(target).exists():
        manifest = RunDir(target).read_manifest()
        if manifest.get("status") == "complete" and (target / "analysis" / "summary.json").is_file():
            return "skipped (complete)"
        config = manifest["config"]
    else:
        plan = plan_fork(parent_dir, at, [override], run_id)
        cfg = plan.run_config()
        create_fork(plan, get_embedder(cfg.memory.embedder), lambda: get_backend(cfg),
                    PROJECT_ROOT)
        config = plan.config
    from flows.pipeline import run_flow

    run_flow(config, [override])
    return "complete"


def forks_stage(spec: StudySpec, say=print) -> dict[str, str]:
    """Run the study's forks and write forks.md and forks.csv; {fork run_id: status}."""
    from steertown.analysis.diff import write_diff
    from steertown.analysis.what_if import agent_measures, fork_effect_rows

    f = spec.forks
    if not f["seeds"]:
        raise ConfigError("study.yaml: forks: no seeds; add forks: {seeds: [1, 2]}")
    out: dict[str, str] = {}
    pairs, diffs = [], []
    for seed in f["seeds"]:
        parent = spec.find(seed, f["mode"])
        state = cell_state(parent)
        if state["status"] != "complete":
            out[f"{parent.run_id} forks"] = "waiting (parent not complete)"
            say(f"[forks] {parent.run_id}: not complete yet; its forks wait")
            continue
        at = int(f["at"] or state["steps"] // 2)
        runs = {}
        for value in f["values"]:
            rid = fork_run_id(parent.run_id, at, f["agent"], f["trait"], float(value))
            override = f"steering.agents.{f['agent']}.{f['trait']}={float(value)}"
            try:
                out[rid] = _run_fork(parent.run_dir, at, override, rid, say)
            except KeyboardInterrupt:
                raise
            except Exception as e:  # noqa: BLE001 - reported; the other forks still run
                out[rid] = failure(e)
            say(f"[forks] {rid}: {out[rid]}")
            runs[float(value)] = parent.run_dir.parent / rid
        if len(runs) == 2 and all(not out[p.name].startswith("failed") for p in runs.values()):
            lo, hi = sorted(runs)
            d = write_diff(runs[lo], runs[hi])
            diffs.append({"seed": seed, "at": at, "minus": runs[lo].name, "plus": runs[hi].name,
                          "first_divergent_tick": d["first_divergent_tick"],
                          "differing_actions": d["differing_actions"],
                          "actions_compared": d["actions_compared"]})
            pairs.append({"seed": seed, "minus": agent_measures(runs[lo], f["agent"], at),
                          "plus": agent_measures(runs[hi], f["agent"], at),
                          "values": (lo, hi)})
    if pairs:
        path = write_forks_results(spec, pairs, diffs, *fork_effect_rows(pairs))
        say(f"Forks: {path}")
    return out


def write_forks_results(spec: StudySpec, pairs: list[dict], diffs: list[dict],
                        per_seed: list[dict], summary: list[dict]) -> Path:
    """forks.csv (per seed and measure) and forks.md (generated; nothing typed by hand)."""
    from steertown.analysis.study_results_report import csv_bytes

    f, out = spec.forks, spec.results_dir
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "forks.csv", csv_bytes(
        per_seed, ("seed", "measure", "minus", "plus", "plus_minus_minus")))
    lo, hi = pairs[0]["values"]
    fmt = (lambda v: "n/a" if v is None else f"{v:+.3f}")  # noqa: E731
    lines = [f"# What-if forks: {spec.name}", "",
             f"Generated by `{stage_command(spec, 'forks')}` from the study's runs; nothing "
             "here is typed by hand.", "",
             f"Each seed's `{f['mode']}` run is forked at tick {diffs[0]['at']} with "
             f"{f['agent']}'s {f['trait']} set to {lo:+g} and to {hi:+g}; everything else is "
             "the parent's, so the difference between the two forks from that tick on is "
             f"the causal effect of {f['agent']}'s {f['trait']}. Measures from the fork tick "
             "on (analysis.what_if); `steertown diff` stored in both forks.", "",
             "| seed | fork -1 | fork +1 | first divergent tick | differing actions |",
             "|---|---|---|---|---|"]
    lines += [f"| {d['seed']} | {d['minus']} | {d['plus']} | {d['first_divergent_tick']} | "
              f"{d['differing_actions']}/{d['actions_compared']} |" for d in diffs]
    seeds = [p["seed"] for p in pairs]
    lines += ["", f"## Effect ({hi:+g} minus {lo:+g}), per seed and mean over {len(seeds)} "
              "seeds (95% t-interval)", "",
              "| measure | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | 95% CI |",
              "|---|" + "---|" * (len(seeds) + 2)]
    for s in summary:
        vals = [next(r["plus_minus_minus"] for r in per_seed
                     if r["seed"] == seed and r["measure"] == s["measure"]) for seed in seeds]
        ci = "n/a" if s["ci_low"] is None else f"[{fmt(s['ci_low'])}, {fmt(s['ci_high'])}]"
        lines.append(f"| {s['measure']} | " + " | ".join(fmt(v) for v in vals)
                     + f" | {fmt(s['mean'])} | {ci} |")
    lines += ["", "Own behaviour: `actions`, `share_<type>`, `places_visited`, "
              "`people_addressed`. Neighbours: `ties_at_end`, `tie_weight_at_end`, "
              "`friends_at_end`, `talk_received`, `talkers_to_agent` (talk aimed at the "
              "agent), `neighbours_before` (agents tied to it before the fork, the same in "
              "both forks), `neighbour_talk_actions`, `neighbour_talk_to_agent`. Per seed "
              "values in `forks.csv`.", ""]
    atomic_write_bytes(out / "forks.md", "\n".join(lines).encode())
    return out / "forks.md"
