"""Subcommands for experiments: `steertown fork` (steertown.sim.fork) and `steertown diff`
(steertown.analysis.diff); thin glue only.

`fork` takes its options anywhere after the run directory
(`steertown fork RUN_DIR --at T [--run-id NAME] key=value ...`): argparse cannot mix
positionals after options in a subcommand, so the subcommand keeps everything after
RUN_DIR and parses it here, intermixed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from steertown.config import ConfigError

FORK_HELP = "start a new run from a run's state at tick T with some keys changed"
FORK_USAGE = "steertown fork RUN_DIR --at T [--run-id NAME] [--no-run] [key=value ...]"


class _OneLineParser(argparse.ArgumentParser):
    """Argument mistakes become a ConfigError: one line, exit code 2, no usage dump."""

    def error(self, message: str):
        raise ConfigError(message)


def _fork_parser() -> argparse.ArgumentParser:
    p = _OneLineParser(prog="steertown fork", usage=FORK_USAGE, description=FORK_HELP)
    p.add_argument("--at", type=int, required=True,
                   help="first tick under the changes (ticks before it are the parent's)")
    p.add_argument("--run-id", help="the fork's run id (default: <parent>-fork-t<T>-<hash>)")
    p.add_argument("--no-run", action="store_true",
                   help="only create the fork directory (run it later with the same command "
                        "minus --no-run, or python flows/continue_run.py <fork_dir>)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="changes, e.g. steering.agents.agent-003.A=0.9 steering.mode=placebo "
                        "steering.strength=2")
    return p


def fork_args(p: argparse.ArgumentParser) -> None:
    p.usage = FORK_USAGE
    p.add_argument("run_dir", type=Path, help="the parent run directory")
    p.add_argument("rest", nargs=argparse.REMAINDER,
                   help="--at T [--run-id NAME] [--no-run] [key=value ...]; see -h after RUN_DIR")


def fork(args: argparse.Namespace) -> int:
    """Plan, build and (unless --no-run) run a fork through the project's run flow."""
    from steertown.inference import get_backend, get_embedder
    from steertown.sim.fork import create_fork, plan_fork

    opts = _fork_parser().parse_intermixed_args(args.rest)
    plan = plan_fork(args.run_dir, opts.at, opts.overrides, opts.run_id)
    entry = Path.cwd() / "flows" / "continue_run.py"
    command = f"python flows/continue_run.py {plan.run_dir}"
    if not opts.no_run and not entry.is_file():  # checked before anything is written
        raise ConfigError("flows/ not found: run steertown fork from the project root, or "
                          "pass --no-run and run the fork later with flows/continue_run.py")
    cfg = plan.run_config()
    create_fork(plan, get_embedder(cfg.memory.embedder), lambda: get_backend(cfg), Path.cwd())
    changes = ", ".join(f"{k}: {v['from']} -> {v['to']}" for k, v in plan.changes.items())
    print(f"fork: {plan.run_dir} (parent {plan.parent_id}, changed from tick {plan.at}: "
          f"{changes or 'nothing'})")
    if opts.no_run:
        print(f"run it with: {command}")
        return 0
    # The fork runs through the project's run flow (Prefect, MLflow), in its own process:
    # the core CLI does not import the orchestration layer.
    return subprocess.call([sys.executable, str(entry), str(plan.run_dir), *opts.overrides])


DIFF_HELP = "compare two runs: first divergent tick, differing actions, outcomes side by side"


def diff_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_a", type=Path, help="a run directory")
    p.add_argument("run_b", type=Path, help="another run directory (e.g. a fork of run_a)")
    p.add_argument("--reports-dir", type=Path, default=Path("reports"),
                   help="where both runs' reports are re-written (default: reports)")
    p.add_argument("--no-report", action="store_true",
                   help="only print and store the diff; leave the reports as they are")


def diff(args: argparse.Namespace) -> int:
    """Print the diff, store it in both runs and re-write both runs' reports."""
    from steertown.analysis.diff import format_diff, write_diff

    d = write_diff(args.run_a, args.run_b)
    print(format_diff(d))
    if not args.no_report:
        from steertown.analysis.report import write_report

        for run in (args.run_a, args.run_b):
            print(f"report: {write_report(run, args.reports_dir)}")
    return 0
