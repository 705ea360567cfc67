"""`import-legacy`: convert a dump of the guide's system into a steertown run directory.

The legacy format (a small example: tests/fixtures/legacy_small): `messages/messages_tNNNNN.parquet`
and `actions/actions_tNNNNN.parquet` per tick (the `tick` column counts from 0, the file
number from 1), an optional `run_<id>_agents.parquet` summary and a JSON-lines log.
Messages carry their steering as a JSON string `steering_snapshot` (trait -> alpha) and
the layers as a JSON list string `layers_used`.

Mapping (documented in the manifest's "legacy" section too):
- tick = the file number NNNNN (= legacy tick + 1 in the dumps seen; steertown counts
  ticks from 1, and the file number is what marks a tick as written).
- A message and an action belong to the same event when they share tick and agent; the
  k-th message of an agent in a tick pairs with its k-th action. event_id = the action's
  row number within its tick; messages without an action get kind 'message'.
- action_type = the legacy type upper-cased (RESEARCH, CITE, ... are kept, not mapped
  onto steertown's vocabulary); success = outcome == 'success'.
- location: the message's room; MOVE rows take params.from -> params.destination.
- agents: the mean logged alpha per trait (the legacy per-agent file has no coefficients).
- strength = 1.0: the snapshot alphas are already the effective ones.
The source is only read. The manifest says source 'legacy' and model 'legacy-mock', so
later stages know model-based checks cannot run on it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from steertown.config import TRAITS, RunConfig
from steertown.config_loading import validate
from steertown.storage import schema
from steertown.storage.run_dir import RunDir, RunDirError, load_parquet

MESSAGE_COLUMNS = ("tick", "from_agent", "room_id", "content", "tokens_in", "tokens_out",
                   "steering_snapshot", "layers_used")
ACTION_COLUMNS = ("tick", "agent_id", "action_type", "params", "outcome")
_FILE_RE = re.compile(r"^(messages|actions)_t(\d+)\.parquet$")


def _tick_files(dump: Path, table: str) -> dict[int, Path]:
    d = dump / table
    if not d.is_dir():
        raise RunDirError(f"{d}: missing (not a legacy dump: expected {table}/{table}_tNNNNN.parquet)")
    out = {}
    for p in d.iterdir():
        m = _FILE_RE.match(p.name)
        if m and m.group(1) == table:
            out[int(m.group(2))] = p
    if not out:
        raise RunDirError(f"{d}: no {table}_tNNNNN.parquet files")
    return out


def _read(path: Path, columns: tuple[str, ...]) -> list[dict[str, Any]]:
    t = load_parquet(path)
    missing = [c for c in columns if c not in t.schema.names]
    if missing:
        raise RunDirError(f"{path}: not a legacy file (missing columns: {', '.join(missing)})")
    extra = [c for c in ("info", "prompt_text") if c in t.schema.names]
    return t.select(list(columns) + extra).to_pylist()


def _json(path: Path, row: int, col: str, text: Any, kind: type) -> Any:
    try:
        v = json.loads(text) if isinstance(text, str) else text
    except json.JSONDecodeError as e:
        raise RunDirError(f"{path}: row {row}: {col} is not JSON ({e.msg})") from None
    if not isinstance(v, kind):
        raise RunDirError(f"{path}: row {row}: {col} is not a JSON {kind.__name__}")
    return v


def _alphas(path: Path, row: int, snapshot: Any) -> dict[str, float]:
    snap = _json(path, row, "steering_snapshot", snapshot, dict)
    try:
        return {f"alpha_{t}": float(snap.get(t, 0.0)) for t in TRAITS}
    except (TypeError, ValueError):
        raise RunDirError(f"{path}: row {row}: steering_snapshot has a non-numeric alpha") from None


def _goal(prompt: str | None) -> str | None:
    m = re.search(r"Current goals: ([^\n]*)", prompt or "")
    return m.group(1).strip() if m else None


def _convert_tick(run_id: str, tick: int, mfile: Path, afile: Path,
                  agent_info: dict[str, dict]) -> dict[str, list[dict]]:
    msgs, acts = _read(mfile, MESSAGE_COLUMNS), _read(afile, ACTION_COLUMNS)
    by_agent: dict[str, list[int]] = defaultdict(list)
    actions = []
    for ev, a in enumerate(acts):
        agent = a["agent_id"]
        if not agent:
            raise RunDirError(f"{afile}: row {ev}: empty agent_id")
        params = _json(afile, ev, "params", a["params"] or "{}", dict)
        atype = str(a["action_type"] or "").upper()
        ok = a["outcome"] == "success"
        actions.append({
            "run_id": run_id, "tick": tick, "event_id": ev, "agent_id": agent,
            "action_type": atype,
            "target": params.get("destination") or params.get("target") or params.get("query"),
            "location": params.get("from") if atype == "MOVE" else None,
            "location_after": params.get("destination") if atype == "MOVE" else None,
            "success": ok, "failure_reason": None if ok else (a["outcome"] or "unknown"),
            "parsed": True})
        by_agent[agent].append(ev)
        info = agent_info.setdefault(agent, {"goal": None})
        if info["goal"] is None:
            info["goal"] = _goal(a.get("prompt_text"))
    messages = []
    used: dict[str, int] = defaultdict(int)
    next_free = len(acts)
    for i, m in enumerate(msgs):
        agent = m["from_agent"]
        if not agent:
            raise RunDirError(f"{mfile}: row {i}: empty from_agent")
        k = used[agent]
        used[agent] += 1
        if k < len(by_agent[agent]):
            ev, kind = by_agent[agent][k], "action"
            act = actions[ev]
            if act["location"] is None:
                act["location"] = m["room_id"]
            if act["location_after"] is None:
                act["location_after"] = act["location"]
        else:
            ev, kind, next_free = next_free, "message", next_free + 1
        layers = _json(mfile, i, "layers_used", m["layers_used"] or "[]", list)
        messages.append({
            "run_id": run_id, "tick": tick, "event_id": ev, "agent_id": agent, "kind": kind,
            "location": m["room_id"], "content": m["content"],
            "tokens_in": m["tokens_in"], "tokens_out": m["tokens_out"],
            **_alphas(mfile, i, m["steering_snapshot"]),
            "strength": 1.0, "layers": [int(x) for x in layers], "seed": None})
        agent_info[agent].setdefault("home", m["room_id"])
    ticks = [{
        "run_id": run_id, "tick": tick, "events": len(actions), "actions": len(actions),
        "messages": len(messages), "reflections": 0,
        "successes": sum(a["success"] for a in actions),
        "tokens_in": sum(m["tokens_in"] or 0 for m in messages),
        "tokens_out": sum(m["tokens_out"] or 0 for m in messages),
        "batches": None, "tick_seconds": None, "model_seconds": None, "other_seconds": None}]
    return {"actions": actions, "messages": messages, "reflections": [], "ticks": ticks}


def _write_tick(rd: RunDir, tick: int, rows: dict[str, list[dict]]) -> None:
    # Like RunDir.write_tick without the per-file fsync: the whole tree lives in a temp
    # directory that is flushed once and renamed into place, so atomicity holds anyway.
    for table in ("actions", "messages", "reflections", "ticks"):
        path = rd.tick_file(table, tick)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows[table], schema=schema.TABLES[table]), path,
                       compression="zstd")


def _legacy_agent_ids(dump: Path) -> list[str]:
    files = sorted(dump.glob("run_*_agents.parquet"))
    if not files:
        return []
    try:
        t = pq.read_table(files[0], columns=["agent_id"])
    except Exception as e:
        raise RunDirError(f"{files[0]}: unreadable agents summary ({e})") from None
    return [str(a) for a in t.column("agent_id").to_pylist()]


def import_legacy(dump_dir: Path, storage_dir: Path, run_id: str | None = None,
                  overwrite: bool = False) -> Path:
    """Convert the legacy dump at `dump_dir` into `storage_dir/<run_id>`; return its path.

    `run_id` defaults to the dump's directory name. Raises RunDirError naming the file
    for a malformed or partial dump, or when the target exists and `overwrite` is False.
    """
    dump = Path(dump_dir).resolve()
    if not dump.is_dir():
        raise RunDirError(f"{dump_dir}: no such legacy dump directory")
    run_id = run_id or dump.name
    cfg = validate(RunConfig(run_id=run_id))  # ConfigError for an id that can't be a folder
    target = Path(storage_dir).resolve() / run_id
    if target == dump or dump in target.parents:
        raise RunDirError(f"{target}: would be written inside the legacy dump; choose another --storage-dir")
    if target.exists() and not overwrite:
        raise RunDirError(f"{target}: already exists (pass --overwrite to replace it)")
    mfiles, afiles = _tick_files(dump, "messages"), _tick_files(dump, "actions")
    for n in sorted(set(mfiles) ^ set(afiles)):
        have, lack = ("messages", "actions") if n in mfiles else ("actions", "messages")
        raise RunDirError(f"{dump / lack / f'{lack}_t{n:05d}.parquet'}: missing "
                          f"(partial dump: {have}_t{n:05d}.parquet has no partner)")
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename at the end, so a failed import leaves nothing.
    tmp = Path(tempfile.mkdtemp(prefix=f".{run_id}.import.", dir=target.parent))
    try:
        rd = RunDir(tmp)
        agent_info: dict[str, dict] = {a: {"goal": None} for a in _legacy_agent_ids(dump)}
        layers: set[int] = set()
        sums: dict[str, list[float]] = defaultdict(lambda: [0.0] * (len(TRAITS) + 1))
        for n in sorted(mfiles):
            rows = _convert_tick(run_id, n, mfiles[n], afiles[n], agent_info)
            for m in rows["messages"]:
                s = sums[m["agent_id"]]
                for i, t in enumerate(TRAITS):
                    s[i] += m[f"alpha_{t}"]
                s[-1] += 1
                layers.update(m["layers"])
            _write_tick(rd, n, rows)
        rd.write_agents([
            {"run_id": run_id, "agent_id": a, "name": a, "home": info.get("home"),
             "goal": info.get("goal"),
             **{t: (sums[a][i] / sums[a][-1] if sums[a][-1] else 0.0)
                for i, t in enumerate(TRAITS)}}
            for a, info in sorted(agent_info.items())])
        ticks = sorted(mfiles)
        cfg.population = len(agent_info)
        cfg.steps = len(ticks)
        cfg.model.name = "mock"
        if layers:
            cfg.layers = sorted(layers)
        rd.write_manifest({
            "run_id": run_id, "arm": "legacy", "source": "legacy",
            "config": cfg.to_dict(), "config_hash": cfg.config_hash(),
            "status": "complete", "ticks_done": len(ticks), "steps": len(ticks),
            "model": {"name": "legacy-mock", "backend": "legacy", "real_model": False,
                      "note": "imported dump; model-based steering checks cannot run"},
            "versions": {}, "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "git_sha": None, "preflight": [],
            "legacy": {"dump_dir": str(dump), "tick_offset": 1, "layers_logged": sorted(layers),
                       "files": {"messages": len(mfiles), "actions": len(afiles)},
                       "mapping": "see steertown.legacy module docstring"},
        })
        os.sync()  # one flush for the whole tree instead of an fsync per file
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
