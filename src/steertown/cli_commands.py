"""The subcommands of `steertown`: thin argument wrappers around library functions.

To add a subcommand, write `_x_args(parser)` and `_x(args) -> exit code` here and add a
`Command` to `COMMANDS` at the bottom. `steertown.cli` builds the parser from that tuple and
turns user errors into one line; this module does not import it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from steertown import cli_experiments


@dataclass(frozen=True)
class Command:
    """One subcommand: its name, one-line help, argument setup and body (returns the exit code)."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# --- analysis, reports, tracking, legacy import (steertown.analysis, .tracking, .legacy) ---
# Heavy imports (duckdb, altair, mlflow) happen inside the commands so `--help` stays fast.


def _analyze_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, help="run directory (storage/dumps/<run_id>)")
    p.add_argument("--reports-dir", type=Path, default=Path("reports"),
                   help="where reports/<run_id>/index.html goes (default: reports)")


def _analyze(args: argparse.Namespace) -> int:
    from steertown.analysis.report import write_report
    from steertown.analysis.summary import analyze_run

    summary = analyze_run(args.run_dir)
    page = write_report(args.run_dir, args.reports_dir, summary=summary)
    print(f"summary: {args.run_dir / 'analysis' / 'summary.json'}")
    print(f"report:  {page}")
    return 0


def _show_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, help="run directory")
    p.add_argument("--table", default="messages",
                   help="agents | actions | messages | reflections | ticks (default: messages)")
    p.add_argument("--tick", type=int, help="only this tick")
    p.add_argument("--agent", help="only this agent_id")
    p.add_argument("--sql", help="SQL over views named after the tables, e.g. "
                                 "\"SELECT action_type, count(*) FROM actions GROUP BY 1\"")
    p.add_argument("--limit", type=int, default=20, help="rows to print (0 = all; default 20)")


def _show(args: argparse.Namespace) -> int:
    from steertown.analysis.show import show_table

    print(show_table(args.run_dir, args.table, tick=args.tick, agent=args.agent, sql=args.sql,
                     limit=args.limit))
    return 0


def _compare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arms", nargs="+", help="only these arms (e.g. fast small)")
    p.add_argument("--runs", nargs="+", help="only these run ids")
    p.add_argument("--out", type=Path, default=Path("reports/compare"),
                   help="output folder (default: reports/compare)")
    p.add_argument("--tracking-uri", help="MLflow store (default: MLFLOW_TRACKING_URI or "
                                          "sqlite:///mlflow.db in the current directory)")


def _compare(args: argparse.Namespace) -> int:
    from steertown.analysis.compare import compare_runs
    from steertown.tracking import tracking_uri

    md = compare_runs(args.arms, args.runs, tracking_uri(args.tracking_uri, Path.cwd()), args.out)
    print(md.read_text())
    print(f"written: {md.parent}")
    return 0


def _import_legacy_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dump_dir", type=Path, help="legacy dump (messages/, actions/, run_*_agents.parquet)")
    p.add_argument("--run-id", help="run id of the new run directory (default: the dump's name)")
    p.add_argument("--storage-dir", type=Path, default=Path("storage/dumps"),
                   help="where the run directory goes (default: storage/dumps)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")


def _import_legacy(args: argparse.Namespace) -> int:
    from steertown.legacy import import_legacy

    path = import_legacy(args.dump_dir, args.storage_dir, args.run_id, overwrite=args.overwrite)
    print(f"imported: {path}")
    print(f"next: steertown analyze {path}  |  steertown verify {path}")
    return 0


# --- verification and diagnostics (steertown.verification.verdict, steertown.preflight) ---

def _run_config(run_dir: Path):
    """The validated config a run was made with (from its manifest)."""
    from steertown.config_loading import load_config
    from steertown.storage.run_dir import RunDir

    manifest = RunDir(run_dir).require().read_manifest()
    return manifest, (load_config(manifest["config"]) if "config" in manifest else None)


def _verify_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, help="run directory (storage/dumps/<run_id>)")
    p.add_argument("--num-files", type=int, default=0,
                   help="only the first N message files (default: all)")
    p.add_argument("--no-model", action="store_true",
                   help="logged checks only: do not load the run's model")
    p.add_argument("--budget", choices=("default", "run"), default="default",
                   help="default (the default): this version's default budget (decisions "
                        "re-scored, items, random directions) with the run's thresholds; "
                        "run: the budget recorded in the run's manifest")
    p.add_argument("--quick", action="store_true",
                   help="small model-check budget (4 items, 5 coefficients, 2 random "
                        "directions, no cross-trait matrix, 1 decision per agent up to 32): "
                        "a quick look, not a verdict")


def default_budget(recorded):
    """This version's default verification budget, with the run's recorded thresholds
    (already floored at the project's, so only ever tighter)."""
    from dataclasses import fields, replace

    from steertown.config import VerificationConfig
    from steertown.config_loading import THRESHOLD_DIRECTIONS

    keep = {f.name: getattr(recorded, f.name) for f in fields(recorded)
            if f.name in THRESHOLD_DIRECTIONS}
    return replace(VerificationConfig(), **keep)


def _verify(args: argparse.Namespace) -> int:
    from steertown.verification.verdict import format_line, verify_run

    manifest, cfg = _run_config(args.run_dir)
    backend = None
    if cfg is not None and not args.no_model and manifest.get("source") != "legacy":
        from steertown.inference import get_backend

        backend = get_backend(cfg)
    vcfg = None
    if cfg is not None and args.budget == "default":
        vcfg = default_budget(cfg.verification)
    if cfg is not None and args.quick:
        from dataclasses import replace

        vcfg = replace(cfg.verification, items_per_trait=4,
                       coefficients=[-2.0, -1.0, 0.0, 1.0, 2.0], random_directions=2,
                       control_items=4, likert_items=2, cross_trait=False,
                       messages_per_agent=2, coherence_prompts=1,
                       decision_samples=min(cfg.verification.decision_samples,
                                            max(3, min(cfg.population, 32))))
    from steertown.verification.progress import Progress

    report = verify_run(args.run_dir, args.num_files, backend, vcfg, Progress(),
                        quick=args.quick)
    for c in report["checks"]:
        print(format_line(c))
    where = args.run_dir / "verification" / "report.md"
    if args.quick:  # a reduced budget: the checks are shown, no verdict is given
        print(f"Steering verification: quick look, not a verdict  ({where})")
        return 0
    print(f"Steering verification: {report['verdict']}  ({where})")
    return 0 if report["verdict"] == "PASS" else 1


def _doctor_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, nargs="?",
                   help="check with this run's config (default: the built-in defaults)")
    p.add_argument("--load", action="store_true",
                   help="also load the model to check its device, dtype and vectors")


def _doctor(args: argparse.Namespace) -> int:
    from steertown.config import RunConfig
    from steertown.preflight import format_findings, preflight

    cfg = _run_config(args.run_dir)[1] if args.run_dir else RunConfig()
    backend = None
    if args.load:
        from steertown.inference import get_backend

        backend = get_backend(cfg)
    findings = preflight(cfg, backend)
    print(format_findings(findings))
    return 0


# --- layer sweep (steertown.verification.layer_sweep) ---


def _sweep_layers_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--layers", type=int, nargs="+", default=[8, 12, 16, 20, 24],
                   help="decoder layers to try (default: 8 12 16 20 24)")
    p.add_argument("--traits", nargs="+", default=["E", "A", "C", "O", "N"],
                   help="traits to sweep (default: E A C O N)")
    p.add_argument("--items", type=int, default=6,
                   help="held-out situations per trait (default: 6, all there are)")
    p.add_argument("--coefficients", type=float, nargs="+", default=[-2.0, -1.0, 1.0, 2.0],
                   help="steering coefficients (0 is always added; default: -2 -1 1 2)")
    p.add_argument("--random", type=int, default=2,
                   help="random directions per layer as the control (default: 2)")
    p.add_argument("--model", default="smollm2", help="model config name (default: smollm2)")
    p.add_argument("--out", type=Path, default=Path("reports/layer_sweep.json"),
                   help="JSON output; a .md table goes beside it (default: reports/layer_sweep.json)")


def _sweep_layers(args: argparse.Namespace) -> int:
    from steertown.config import TRAITS, ConfigError
    from steertown.config_loading import load_config
    from steertown.inference import get_backend
    from steertown.verification.layer_sweep import format_table, sweep_layers, write_outputs

    bad = [t for t in args.traits if t not in TRAITS]
    if bad:
        raise ConfigError(f"--traits: unknown {' '.join(bad)}; allowed: {' '.join(TRAITS)}")
    cfg = load_config({"model": {"name": args.model}})  # default layers: cached vectors
    backend = get_backend(cfg)
    if getattr(backend, "name", "") == "mock":
        raise ConfigError("--model: the mock backend has no residual stream to sweep")
    result = sweep_layers(backend, sorted(set(args.layers)), list(args.traits), args.items,
                          args.coefficients, args.random,
                          progress=lambda line: print(line, flush=True))
    print(format_table(result))
    print("best: " + ", ".join(f"{t} L{b['layer']}" if b.get("layer") else f"{t} none"
                               for t, b in result["best"].items()))
    js, md = write_outputs(result, args.out)
    print(f"written: {js} {md}")
    return 0


# Every subcommand, in the order `steertown --help` lists them.
COMMANDS: tuple[Command, ...] = (
    Command("analyze", "re-run the analysis, charts and HTML report of a run",
            _analyze_args, _analyze),
    Command("show", "print rows of a run's tables, or run SQL over them",
            _show_args, _show),
    Command("compare", "compare tracked runs per arm (seeds as replicates) from MLflow",
            _compare_args, _compare),
    Command("import-legacy", "convert a dump of the guide's system into a steertown run directory",
            _import_legacy_args, _import_legacy),
    Command("verify", "check that steering was applied and changed behaviour",
            _verify_args, _verify),
    Command("doctor", "preflight diagnostics (the guide's troubleshooting checklist)",
            _doctor_args, _doctor),
    Command("sweep-layers", "find the layers where each trait vector steers best (dose-response)",
            _sweep_layers_args, _sweep_layers),
    Command("fork", cli_experiments.FORK_HELP, cli_experiments.fork_args, cli_experiments.fork),
    Command("diff", cli_experiments.DIFF_HELP, cli_experiments.diff_args, cli_experiments.diff),
)
