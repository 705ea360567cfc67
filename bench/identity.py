"""The identity check: the same fast-arm ticks on torch float32 and on ONNX, message by message.

`bench/run.py --identity --ticks 12`: the guide's fast arm (32 agents, 12 events per tick,
reflect every 5, 48 tokens; seed 3) simulated for `--ticks` ticks by each variant in one
process, one after another (models loaded first and excluded):

- torch float32: the exactness reference;
- onnx, default levers: the ONNX backend as it runs by default;
- onnx, levers off: every lever of bench/onnx_levers.py off (the earlier ONNX path).

Each variant's action messages (and reflections) are compared with torch float32's,
tick by tick and agent by agent; seconds per tick give the whole-tick speed of each.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from bench.workload import fast_config, simulate

SEED = 3


def _messages(run_dir: Path) -> dict[tuple, str]:
    out = {}
    for f in sorted((run_dir / "messages").glob("*.parquet")):
        for r in pq.read_table(f, columns=["tick", "agent_id", "kind", "content"]).to_pylist():
            key = (r["tick"], r["agent_id"], r["kind"])
            out[key] = out.get(key, "") + "\n" + r["content"]
    return out


def identity(table, ticks: int, overrides: list[str] | None = None) -> dict[str, Any]:
    """Run every variant for `ticks` ticks; rows into `table`; counts and speeds as a dict."""
    from bench.backends import load_variants
    from bench.onnx_levers import LEVERS, defaults
    from steertown.inference import get_embedder
    from steertown.inference.prefix_cache import PrefixKVCache

    cfg = fast_config([f"seed={SEED}", *(overrides or [])])
    loaded = load_variants(cfg, ["torch float32", "onnx float32"])
    onnx = loaded["onnx float32"]
    before = {lever: getattr(onnx, lever) for lever in LEVERS}
    variants = [("torch float32", loaded["torch float32"], None),
                ("onnx, default levers", onnx, defaults()),
                ("onnx, levers off", onnx, {k: False for k in LEVERS})]
    embedder = get_embedder(cfg.memory.embedder)
    facts: dict[str, Any] = {"ticks": ticks, "seed": SEED}
    ref: dict[tuple, str] = {}
    base = None
    with tempfile.TemporaryDirectory(prefix="steertown-identity-") as d:
        for name, backend, levers in variants:
            for lever, on in (levers or {}).items():
                setattr(backend, lever, on)
            backend.prefix_kv = PrefixKVCache()  # cold, as a new run starts
            r = simulate(cfg, backend, embedder, ticks, Path(d) / name.replace(" ", "_"))
            msgs = _messages(Path(d) / name.replace(" ", "_"))
            per_tick = r["seconds"] / ticks
            base = base or per_tick
            if not ref:
                ref = msgs
            acts = [k for k in ref if k[2] == "action"]
            same = sum(msgs.get(k) == ref[k] for k in acts)
            same_all = sum(msgs.get(k) == ref[k] for k in ref)
            table.add("identity", f"{name}: {ticks} fast-arm ticks (seed {SEED})", r["seconds"],
                      base / per_tick, f"{per_tick:.2f} s/tick (ratio = speed vs torch "
                      f"float32); action messages identical to torch float32: {same}/{len(acts)};"
                      f" all messages {same_all}/{len(ref)}")
            facts[name] = {"seconds_per_tick": round(per_tick, 3), "actions_identical": same,
                           "actions": len(acts), "messages_identical": same_all,
                           "messages": len(ref)}
    for lever, on in before.items():
        setattr(onnx, lever, on)
    return facts
