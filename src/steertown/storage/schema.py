"""Column schemas of a run directory's Parquet tables (the contract every stage reads).

Layout of `storage/dumps/<run_id>/`:
  manifest.json            resolved config, hashes, versions, model, vector ids, status
  agents.parquet           one row per agent (assigned Big Five coefficients)
  actions/actions_tNNNNN.parquet     one row per action taken in tick N
  messages/messages_tNNNNN.parquet   one row per generation (action or reflection)
  reflections/reflections_tNNNNN.parquet   plans produced by reflection
  decisions/decisions_tNNNNN.parquet       one row per action decision (prompt, options,
                                           chosen option and its log-probability)
  ticks/ticks_tNNNNN.parquet         one row per tick: counts, tokens, timings
  checkpoints/ckpt_tNNNNN/           state after tick N (see sim.checkpoint)
  verification/, analysis/           outputs of the later stages
Ticks are numbered from 1. Columns ending in `_seconds` are wall-clock timings: the only
columns allowed to differ between a resumed and an uninterrupted run.
"""

from __future__ import annotations

import pyarrow as pa

from steertown.config import TRAITS

ALPHA_FIELDS = [pa.field(f"alpha_{t}", pa.float64()) for t in TRAITS]

AGENTS = pa.schema(
    [pa.field("run_id", pa.string()), pa.field("agent_id", pa.string()),
     pa.field("name", pa.string()), pa.field("home", pa.string()),
     pa.field("goal", pa.string())]
    + [pa.field(t, pa.float64()) for t in TRAITS]
)

ACTIONS = pa.schema([
    pa.field("run_id", pa.string()), pa.field("tick", pa.int64()),
    pa.field("event_id", pa.int64()), pa.field("agent_id", pa.string()),
    pa.field("action_type", pa.string()), pa.field("target", pa.string()),
    pa.field("location", pa.string()), pa.field("location_after", pa.string()),
    pa.field("success", pa.bool_()), pa.field("failure_reason", pa.string()),
    pa.field("parsed", pa.bool_()),
])

MESSAGES = pa.schema([
    pa.field("run_id", pa.string()), pa.field("tick", pa.int64()),
    pa.field("event_id", pa.int64()), pa.field("agent_id", pa.string()),
    pa.field("kind", pa.string()), pa.field("location", pa.string()),
    pa.field("content", pa.string()),
    pa.field("tokens_in", pa.int64()), pa.field("tokens_out", pa.int64()),
    *ALPHA_FIELDS,
    pa.field("strength", pa.float64()), pa.field("layers", pa.list_(pa.int64())),
    pa.field("seed", pa.int64()),
    # Free-text quality label (agents.text_quality): ok | garbage | template_leak |
    # too_short | repeat | unrelated; `none` for Move/Rest and reflections.
    pa.field("quality", pa.string()),
])

REFLECTIONS = pa.schema([
    pa.field("run_id", pa.string()), pa.field("tick", pa.int64()),
    pa.field("agent_id", pa.string()), pa.field("plan", pa.string()),
    pa.field("memories_used", pa.int64()),
])

TICKS = pa.schema([
    pa.field("run_id", pa.string()), pa.field("tick", pa.int64()),
    pa.field("events", pa.int64()), pa.field("actions", pa.int64()),
    pa.field("messages", pa.int64()), pa.field("reflections", pa.int64()),
    pa.field("successes", pa.int64()), pa.field("tokens_in", pa.int64()),
    pa.field("tokens_out", pa.int64()), pa.field("batches", pa.int64()),
    pa.field("tick_seconds", pa.float64()), pa.field("model_seconds", pa.float64()),
    pa.field("other_seconds", pa.float64()),
])

# One row per constrained action decision: everything needed to replay it exactly
# (verification re-scores the allowed options under other steerings).
DECISIONS = pa.schema([
    pa.field("run_id", pa.string()), pa.field("tick", pa.int64()),
    pa.field("event_id", pa.int64()), pa.field("agent_id", pa.string()),
    pa.field("system", pa.string()), pa.field("user", pa.string()),
    pa.field("prompt_hash", pa.string()),
    pa.field("options", pa.list_(pa.string())), pa.field("chosen_option", pa.string()),
    pa.field("option_logprob", pa.float64()),
    *ALPHA_FIELDS,
    pa.field("seed", pa.int64()),
])

TABLES: dict[str, pa.Schema] = {
    "actions": ACTIONS, "messages": MESSAGES, "reflections": REFLECTIONS,
    "decisions": DECISIONS, "ticks": TICKS,
}
