"""The `bench/run.py --<flag>` measurements: each measures one thing and writes its own
block of bench/RESULTS.md (machine, date, table), then prints the table and its facts."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.report import Table, machine, write_block
from bench.workload import fast_config, load_workload

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def record(args: argparse.Namespace, key: str, title: str | Callable[[Any], str],
           measure: Callable[[Table], Any]) -> Any:
    """Run `measure(table)`, write the block `key` (unless --no-write; a callable title is
    given the facts), print the table and facts, and return the facts."""
    started = machine()["date"]
    table = Table()
    facts = measure(table)
    if not args.no_write:
        title = title(facts) if callable(title) else title
        write_block(RESULTS, key, title, {**machine(), "date": started}, table.markdown())
    print(table.markdown())
    print(json.dumps(facts, indent=1))
    return facts


def run_backends(args: argparse.Namespace) -> int:
    """`--backends`: backends side by side on the recorded action and reflection ticks."""
    from bench.backends import compare

    record(args, "backends", "Backends on the recorded workload (bench/run.py --backends)",
           lambda t: compare(t, fast_config(args.set), load_workload(args.workload), reps=2))
    return 0


def run_onnx_levers(args: argparse.Namespace) -> int:
    """`--onnx-levers`: each ONNX backend lever on vs off on the recorded ticks."""
    from bench.onnx_levers import levers

    record(args, "onnx-levers", "ONNX backend levers on the recorded workload "
           "(bench/run.py --onnx-levers)",
           lambda t: levers(t, fast_config(args.set), load_workload(args.workload), reps=2))
    return 0


def run_processes(args: argparse.Namespace) -> int:
    """`--processes`: two 1-thread runs at once vs one all-core run after another."""
    from bench.processes import measure

    record(args, "processes", "Independent runs: 2 processes x 1 thread vs 1 process on all "
           f"cores (bench/run.py --processes --ticks {args.ticks})",
           lambda t: measure(args.ticks, t))
    return 0


def run_identity(args: argparse.Namespace) -> int:
    """`--identity`: the same fast-arm ticks on torch float32 and ONNX, message by message."""
    from bench.identity import identity

    facts = record(args, "identity", f"Identity check: {args.ticks} fast-arm ticks, torch "
                   "float32 vs ONNX (bench/run.py --identity)",
                   lambda t: identity(t, args.ticks, args.set))
    onnx = facts["onnx, default levers"]
    return 0 if onnx["actions_identical"] == onnx["actions"] else 1


def run_verify_cost(args: argparse.Namespace) -> int:
    """`--verify-cost RUN_DIR`: verify's decision re-scoring, previous vs current scorer."""
    from bench.verify_cost import measure

    facts = record(args, "verify-cost",
                   lambda f: "verify's decision re-scoring, previous vs current scorer, "
                   f"{f['decisions']} decisions of {args.verify_cost.name} "
                   "(bench/run.py --verify-cost)",
                   lambda t: measure(t, args.verify_cost, n_decisions=args.decisions))
    return 0 if max(facts["max_abs_diff_vs_previous"].values()) <= 1e-4 else 1


def run_mock_scale(args: argparse.Namespace) -> int:
    """`--mock-scale`: 10,000 agents x 100 ticks on the mock backend, report included."""
    from bench.mock_scale import measure

    facts = record(args, "mock-scale", "Mock scale: 10,000 agents x 100 ticks, hashing "
                   "embedder, report rendered (bench/run.py --mock-scale)", measure)
    return 0 if facts["total_s"] < 120 else 1


def run_full_arm(args: argparse.Namespace) -> int:
    """`--full-arm`: the whole fast arm end to end on one backend."""
    from bench.backends import full_arm
    from steertown.inference import get_backend

    over = [f"model.backend={args.backend}"] + ([f"model.dtype={args.dtype}"] if args.dtype
                                                 else []) + args.set
    cfg = fast_config(over)
    t0 = time.perf_counter()
    backend = get_backend(cfg)
    desc = backend.describe()
    label = "mock" if cfg.model.name == "mock" else \
        f"{desc.get('backend', args.backend)} {desc.get('dtype', '')}".strip()
    load_s = time.perf_counter() - t0

    def measure(table: Table) -> Any:
        table.add("setup", f"load {label} (excluded below)", load_s)
        return full_arm(table, cfg, backend, label)

    record(args, f"full-arm-{label.replace(' ', '-')}",
           f"Full fast arm, {label} (bench/run.py --full-arm --backend {args.backend})", measure)
    return 0
