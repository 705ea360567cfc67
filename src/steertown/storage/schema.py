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
  interactions/, agent_state/, society/, memories/   the town's social record (below)
  checkpoints/ckpt_tNNNNN.safetensors   whole simulation state after tick N (sim.checkpoint)
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
    pa.field("strength", pa.float64()), pa.field("steering_mode", pa.string()),
    pa.field("layers", pa.list_(pa.int64())),
    pa.field("seed", pa.int64()),
    # What the generation saw: the memories retrieved into its prompt (ids of the
    # memories table), the prompt's hash, and its text when world.log_prompts is on.
    pa.field("memory_ids", pa.list_(pa.int64())), pa.field("prompt_hash", pa.string()),
    pa.field("prompt", pa.string()),
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
    pa.field("seed", pa.int64()), pa.field("steering_mode", pa.string()),
])

# One row per effect between two agents: TALK (detail "reply" when answering), HELP
# (amount of coins or energy in detail), INVITE / ACCEPT (detail = place), NEWS (the
# target learned the news from the actor). Witnesses = the others present.
INTERACTIONS = pa.schema([
    pa.field("run_id", pa.string()), pa.field("tick", pa.int64()),
    pa.field("event_id", pa.int64()), pa.field("type", pa.string()),
    pa.field("actor", pa.string()), pa.field("target", pa.string()),
    pa.field("witnesses", pa.list_(pa.string())), pa.field("amount", pa.float64()),
    pa.field("detail", pa.string()),
])

# One row per agent per tick, after the tick.
AGENT_STATE = pa.schema([
    pa.field("run_id", pa.string()), pa.field("tick", pa.int64()),
    pa.field("agent_id", pa.string()), pa.field("location", pa.string()),
    pa.field("coins", pa.int64()), pa.field("energy", pa.int64()),
    pa.field("earned", pa.int64()), pa.field("friends", pa.int64()),
    pa.field("places_visited", pa.int64()), pa.field("gathered", pa.int64()),
    pa.field("goal_kind", pa.string()), pa.field("goal_progress", pa.float64()),
    pa.field("goal_done_tick", pa.int64()),  # null until the target is reached
    pa.field("knows_news", pa.bool_()), pa.field("news_from", pa.string()),
    pa.field("news_tick", pa.int64()),
])

# One row per tick: the town as a network and an economy (see world.metrics).
SOCIETY = pa.schema([
    pa.field("run_id", pa.string()), pa.field("tick", pa.int64()),
    pa.field("agents", pa.int64()), pa.field("tie_edges", pa.int64()),
    pa.field("friend_edges", pa.int64()), pa.field("density", pa.float64()),
    pa.field("clustering", pa.float64()), pa.field("degree_centralisation", pa.float64()),
    pa.field("gini_coins", pa.float64()), pa.field("mean_coins", pa.float64()),
    pa.field("mean_energy", pa.float64()), pa.field("goals_met", pa.int64()),
    pa.field("news_reach", pa.float64()),
])

# Memories as they are stored (ids are per agent, in order of creation).
MEMORIES = pa.schema([
    pa.field("run_id", pa.string()), pa.field("tick", pa.int64()),
    pa.field("agent_id", pa.string()), pa.field("memory_id", pa.int64()),
    pa.field("text", pa.string()), pa.field("importance", pa.float64()),
])

TABLES: dict[str, pa.Schema] = {
    "actions": ACTIONS, "messages": MESSAGES, "reflections": REFLECTIONS,
    "decisions": DECISIONS, "interactions": INTERACTIONS, "agent_state": AGENT_STATE,
    "society": SOCIETY, "memories": MEMORIES, "ticks": TICKS,
}


class RunDirError(ValueError):
    """A run directory that is missing, not a run, or holds files of another schema."""


def option_class(option: str) -> str:
    """The class of a decision option: its first word, lowercased ("Talk Ben:" -> "talk").

    The world's options all start with their action word, so classes of new actions
    ("Help ...", "Invite ...") need no list here.
    """
    word = option.strip().split(" ", 1)[0] if option and option.strip() else ""
    return word.rstrip(":").lower()
