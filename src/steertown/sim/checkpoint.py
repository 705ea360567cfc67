"""Checkpoints: the whole simulation state after a tick, in one inspectable file.

A checkpoint is `checkpoints/ckpt_tNNNNN.safetensors`: memory arrays (embeddings,
importance, ticks of all agents, concatenated) as tensors, and the JSON state (agents,
memory texts, transcripts, tick, seed derivation) in the safetensors metadata, with a
SHA-256 over both. safetensors cannot execute code on load, unlike pickle.
RNG state: every generator is derived from (seed, tick) at the start of a tick, so
the tick counter and the seed are the complete RNG state.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import deque
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save as st_save

from steertown.sim.engine import TRANSCRIPT_LINES, Simulation
from steertown.storage.run_dir import RunDir, atomic_write_bytes
from steertown.world.scheduler import Encounter

log = logging.getLogger(__name__)
FORMAT = "steertown-checkpoint/2"  # 2: world state (resources, ties, news, replies)


class CheckpointError(ValueError):
    """A checkpoint file that is truncated, corrupted or from another run."""


def _digest(state_json: str, arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256(state_json.encode())
    for k in sorted(arrays):
        h.update(k.encode())
        h.update(np.ascontiguousarray(arrays[k]).tobytes())
    return h.hexdigest()


def checkpoint_path(run: RunDir, tick: int) -> Path:
    return run.checkpoints / f"ckpt_t{tick:05d}.safetensors"


def save_checkpoint(sim: Simulation, run: RunDir, keep: int) -> Path:
    """Write the state after `sim.tick` atomically; keep the newest `keep` checkpoints."""
    metas, embs, imps, ticks, ids = {}, [], [], [], []
    for a in sim.agents:
        meta, arr = sim.memories[a.agent_id].to_state()
        metas[a.agent_id] = meta
        embs.append(arr["emb"])
        imps.append(arr["importance"])
        ticks.append(arr["tick"])
        ids.append(arr["ids"])
    dim = sim.memories[sim.agents[0].agent_id].dim
    arrays = {
        "memory.emb": np.concatenate(embs) if embs else np.zeros((0, dim), np.float32),
        "memory.importance": np.concatenate(imps).astype(np.float32),
        "memory.tick": np.concatenate(ticks).astype(np.int64),
        "memory.ids": np.concatenate(ids).astype(np.int64),
    }
    state = {
        "format": FORMAT, "run_id": sim.run_id, "tick": sim.tick, "seed": sim.cfg.seed,
        "config_hash": sim.cfg.config_hash(),
        "rng": "numpy default_rng([seed, tick, stream]) derived at each tick; no carried state",
        "agents": {a.agent_id: a.to_state() for a in sim.agents},
        "memories": {k: v["texts"] for k, v in metas.items()},
        "memory_next_id": {k: v["next_id"] for k, v in metas.items()},
        "transcripts": {k: list(v) for k, v in sim.transcripts.items()},
        "ties": sim.ties.to_state(),
        "pending_replies": [e.to_state() for e in sim.pending_replies],
        "line_history": sim.quality.to_state(),
    }
    state_json = json.dumps(state, sort_keys=True)
    data = st_save(arrays, metadata={"state": state_json,
                                     "sha256": _digest(state_json, arrays)})
    path = checkpoint_path(run, sim.tick)
    atomic_write_bytes(path, data)
    for old in list_checkpoints(run)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def list_checkpoints(run: RunDir) -> list[Path]:
    """Checkpoint files, oldest first."""
    if not run.checkpoints.is_dir():
        return []
    return sorted(run.checkpoints.glob("ckpt_t*.safetensors"))


def _read(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    try:
        with safe_open(path, framework="np") as f:
            meta = f.metadata() or {}
            arrays = {k: f.get_tensor(k) for k in f.keys()}
        if "state" not in meta:
            raise KeyError("state")
    except Exception as e:  # any parse failure (truncated, corrupted) means not usable
        raise CheckpointError(f"{path}: unreadable ({type(e).__name__})") from None
    if _digest(meta["state"], arrays) != meta.get("sha256"):
        raise CheckpointError(f"{path}: checksum mismatch")
    state = json.loads(meta["state"])
    if state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unknown format {state.get('format')!r}")
    return state, arrays


def load_latest(sim: Simulation, run: RunDir, max_tick: int | None = None) -> int:
    """Restore the newest good checkpoint (<= max_tick) into `sim`; return its tick or 0.

    Bad checkpoints are reported and skipped, falling back to older ones.
    """
    for path in reversed(list_checkpoints(run)):
        try:
            state, arrays = _read(path)
        except (CheckpointError, OSError) as e:
            log.warning("skipping bad checkpoint: %s", e)
            continue
        if max_tick is not None and state["tick"] > max_tick:
            continue
        if state["config_hash"] != sim.cfg.config_hash():
            raise CheckpointError(f"{path}: written by a different config")
        restore(sim, state, arrays)
        return sim.tick
    return 0


def restore(sim: Simulation, state: dict, arrays: dict[str, np.ndarray]) -> None:
    sim.tick = state["tick"]
    offset = 0
    for a in sim.agents:
        a.load_state(state["agents"][a.agent_id])
        texts = state["memories"][a.agent_id]
        n = len(texts)
        sim.memories[a.agent_id].load_state(
            {"texts": texts, "next_id": state["memory_next_id"][a.agent_id]},
            {key: arrays[f"memory.{key}"][offset:offset + n]
             for key in ("emb", "importance", "tick", "ids")})
        offset += n
    sim.transcripts = {k: deque(v, maxlen=TRANSCRIPT_LINES)
                       for k, v in state["transcripts"].items()}
    sim.ties.load_state(state["ties"])
    sim.pending_replies = [Encounter(-1, **e) for e in state["pending_replies"]]
    sim.quality.load_state(state.get("line_history", {}))
