"""Studies: a grid of arms x seeds x steering modes, run one cell after another (or on
Dask), verified, and analysed into the study's results.

    python flows/study.py studies/town-v1 [--stage simulate|verify|analyze|forks|all]
        [--data-dir DIR] [--results-dir DIR]
    python flows/study.py --reproduce studies/town-v1 --seed 3 --mode placebo
    python flows/study.py --arms fast --seeds 1 2 [--modes vectors placebo]
        [--override steps=20 ...] [--dask [--workers 2 | --address tcp://... | --gpus 4]
        [--start-server]]

A study is a folder with a `study.yaml` (flows/study_spec.py). Re-running the same command
skips finished cells and resumes unfinished ones from their checkpoints; stop it at any
time. `--stage all` (the default) simulates every cell, then verifies them, then writes
the results; each stage can run on its own (simulate now, verify later). Cells run one
at a time in this process (the model loads once); `--dask` runs them in parallel on Dask
under a Prefect server instead (flows/study_flow.py), verification included per run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flows.environment import configure

STAGES = ("simulate", "verify", "analyze", "forks", "all")
ALL_STAGES = ("simulate", "verify", "analyze")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="flows/study.py", description=__doc__.split("\n\n")[0])
    p.add_argument("study", nargs="?", type=Path, help="a study folder (studies/<name>) "
                   "holding study.yaml")
    p.add_argument("--stage", choices=STAGES, default="all",
                   help="simulate, verify, analyze (all = the three in order), or forks")
    p.add_argument("--data-dir", type=Path, help="run directories, reports and MLflow store "
                   "(default: the study file's data_dir)")
    p.add_argument("--results-dir", type=Path, help="results.md, effects.csv... (default: "
                   "the study folder)")
    p.add_argument("--reproduce", type=Path, metavar="STUDY", help="re-run one cell of STUDY "
                   "from scratch and compare it with the recorded one (with --seed, --mode)")
    p.add_argument("--seed", type=int, help="the cell to reproduce")
    p.add_argument("--mode", help="the cell to reproduce")
    p.add_argument("--arms", nargs="+", help="arms (conf/arm/*.yaml), instead of a study file")
    p.add_argument("--seeds", nargs="+", type=int, help="replicate seeds")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="Hydra override for every run (repeatable; a,b sweeps with --dask)")
    p.add_argument("--modes", nargs="+", metavar="MODE",
                   help="steering modes (conf/steering/*.yaml): each arm x seed runs in each")
    p.add_argument("--name", help="study name (default: hash of its run ids)")
    p.add_argument("--dask", action="store_true", help="run the cells in parallel on Dask")
    p.add_argument("--workers", type=int, help="Dask LocalCluster worker processes (2)")
    p.add_argument("--address", help="scheduler of an existing Dask cluster (tcp://host:8786)")
    p.add_argument("--gpus", type=int, help="Dask: one worker per GPU (CUDA_VISIBLE_DEVICES)")
    p.add_argument("--start-server", action="store_true",
                   help="Dask: start a Prefect server on 127.0.0.1 for this study")
    return p.parse_args(argv)


def _uses_dask(args: argparse.Namespace) -> bool:
    return bool(args.dask or args.workers or args.address or args.gpus or args.start_server)


def _check(args: argparse.Namespace) -> None:
    from steertown.config import ConfigError

    given = [n for n in ("study", "reproduce", "arms") if getattr(args, n)]
    if len(given) != 1:
        raise ConfigError("give a study folder, --reproduce STUDY, or --arms/--seeds "
                          "(exactly one)")
    if args.arms and not args.seeds:
        raise ConfigError("--seeds: required with --arms")
    if args.reproduce and (args.seed is None or not args.mode):
        raise ConfigError("--reproduce: needs --seed S and --mode M")
    if (args.workers is not None and args.workers < 1) or (args.gpus or 0) < 0:
        raise ConfigError("--workers must be >= 1 and --gpus >= 0")
    if _uses_dask(args) and not args.arms:
        raise ConfigError("--dask: only with --arms/--seeds (a study file runs its cells in "
                          "order)")


def spec_from_args(args: argparse.Namespace):
    """A study of `--arms x --seeds x --modes` with the overrides (run ids from arm, seed
    and config hash, as `flows/run.py -m` gives them)."""
    from flows.compose import sweep
    from flows.study_flow import study_name
    from flows.study_spec import StudySpec
    from steertown.config import ConfigError

    if any("," in o.split("=", 1)[-1] for o in args.override):
        raise ConfigError("--override: a,b sweeps need --dask; list the values as modes "
                          "or seeds, or run one study per value")
    sweep(args.arms, args.seeds, args.override)  # one-line errors for bad arms or keys
    spec = StudySpec(name="pending", arms=args.arms, seeds=args.seeds,
                     modes=list(args.modes or [None]), overrides=args.override,
                     fixed_run_ids=False)
    spec.name = args.name or study_name([c.run_id for c in spec.cells()])
    spec.results_dir = args.results_dir or (
        Path(spec.cells()[0].config["reports_dir"]) / "studies" / spec.name)
    return spec


def run_stages(spec, stage: str) -> int:
    """Run the stage(s); exit code 1 if a cell failed, else 0."""
    from flows import study_stages

    failed = []
    for name in (ALL_STAGES if stage == "all" else (stage,)):
        if name == "simulate":
            out = study_stages.simulate_stage(spec)
        elif name == "verify":
            out = study_stages.verify_stage(spec)
        elif name == "analyze":
            study_stages.analyze_stage(spec)
            out = {}
        else:
            from flows.study_forks import forks_stage

            out = forks_stage(spec)
        failed += [f"{rid}: {s}" for rid, s in out.items() if s.startswith("failed")]
    if failed:
        print(f"error: {len(failed)} failed: " + "; ".join(failed), file=sys.stderr)
        print("Re-run the same command to retry them; finished cells are skipped.",
              file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    configure()  # before anything below imports Prefect
    from steertown.admission import USER_ERRORS
    from steertown.config import ConfigError

    try:
        _check(args)
        if args.reproduce:
            from flows.study_reproduce import reproduce

            return reproduce(args.reproduce, args.seed, args.mode, args.data_dir,
                             args.results_dir)
        if args.arms and _uses_dask(args):
            return _dask(args)
        if args.arms:
            spec = spec_from_args(args)
        else:
            from flows.study_spec import load_study

            spec = load_study(args.study, args.data_dir, args.results_dir)
    except (ConfigError, *USER_ERRORS) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        return run_stages(spec, args.stage)
    except KeyboardInterrupt:
        print("\nstopped; re-run the same command to resume (finished cells are skipped, "
              "the current one continues from its last checkpoint)", file=sys.stderr)
        return 130


def _dask(args: argparse.Namespace) -> int:
    """The parallel path: the grid (with a,b sweeps) on Dask under a Prefect server."""
    from flows.compose import compose_config, sweep
    from flows.study_flow import run_on_dask
    from steertown.admission import admit_run
    from steertown.config import ConfigError

    overrides = list(args.override)
    if args.modes:  # a mode sweep is one more swept override (Hydra's a,b syntax)
        overrides.append(f"steering.mode={','.join(args.modes)}")
    seen: dict[str, int] = {}
    for i, job in enumerate(sweep(args.arms, args.seeds, overrides)):
        rid = admit_run(compose_config(job)).run.run_id
        if rid in seen:
            raise ConfigError(f"runs {seen[rid] + 1} and {i + 1} of the grid share run_id "
                              f"{rid}; drop the fixed run_id override")
        seen[rid] = i
    return run_on_dask(args.arms, args.seeds, overrides, args.name, args.workers or 2,
                       args.address, args.gpus or 0, args.start_server)


if __name__ == "__main__":
    sys.exit(main())
