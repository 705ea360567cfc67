"""The tick engine: schedule encounters, build prompts, batch-generate, apply actions.

All randomness of a tick comes from generators derived from (seed, tick), and every
generation carries a seed derived from (seed, tick, agent), so a tick's output depends
only on the state at its start: this is what makes resume from a checkpoint exact.

A tick runs in rounds: the scheduled encounters (and replies carried over from the last
tick, first), then the replies to what was said in them, while the tick's budget of
`max_events_per_tick` turns lasts; replies beyond it open the next tick. What each
action does to the world is `world.rules`; this module only orchestrates.
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from steertown.agents import prompts
from steertown.agents.memory import MemoryStream
from steertown.agents.text_quality import NOT_FREE_TEXT, QualityLabeler, situation_text
from steertown.config import TRAITS, RunConfig
from steertown.inference.backend import Backend, GenerationRequest, GenerationResult
from steertown.inference.batching import BatchStats, generate_all
from steertown.seeds import derive_seed
from steertown.steering import modes
from steertown.world.actions import Action, parse_action
from steertown.world.goals import spec_of, update_goal
from steertown.world.metrics import society_row
from steertown.world.residents import Agent, sample_population
from steertown.world.rules import IMPORTANCE, Rules
from steertown.world.scheduler import Encounter, schedule_encounters
from steertown.world.social import NEWS, Ties, seed_news
from steertown.world.town import Town

TRANSCRIPT_LINES = 3
MAX_EXCHANGE = 3  # lines in one exchange: a TALK, its reply, and the answer to that


class Embedder(Protocol):
    def embed(self, texts: list[str]) -> np.ndarray: ...


@dataclass
class TickResult:
    tick: int
    encounters: list[Encounter]
    actions: list[dict] = field(default_factory=list)
    messages: list[dict] = field(default_factory=list)
    reflections: list[dict] = field(default_factory=list)
    decisions: list[dict] = field(default_factory=list)
    interactions: list[dict] = field(default_factory=list)
    agent_state: list[dict] = field(default_factory=list)
    society: list[dict] = field(default_factory=list)
    memories: list[dict] = field(default_factory=list)
    ticks: list[dict] = field(default_factory=list)

    def rows(self) -> dict[str, list[dict]]:
        return {"actions": self.actions, "messages": self.messages,
                "reflections": self.reflections, "decisions": self.decisions,
                "interactions": self.interactions, "agent_state": self.agent_state,
                "society": self.society, "memories": self.memories, "ticks": self.ticks}


def prompt_hash(system: str, user: str) -> str:
    """Stable short hash of a prompt (system + user), for joining and de-duplication."""
    return hashlib.blake2b(f"{system}\x00{user}".encode(), digest_size=8).hexdigest()



class Simulation:
    """The town and its agents; `run_tick` advances it by one tick."""

    def __init__(self, cfg: RunConfig, backend: Backend, embedder: Embedder, run_id: str):
        self.cfg = cfg
        self.backend = backend
        self.embedder = embedder
        self.run_id = run_id
        self.agents = sample_population(cfg)
        self.by_id = {a.agent_id: a for a in self.agents}
        self.name_of = {a.agent_id: a.name for a in self.agents}
        self.town = Town(num_homes=len({a.home for a in self.agents}))
        self.ties = Ties()
        self.rules = Rules(self.town, self.agents, self.ties)
        dim = int(embedder.embed(["dimension probe"]).shape[1])
        self.memories = {a.agent_id: MemoryStream(cfg.memory.max_memories, dim,
                                                  cfg.memory.recency_decay)
                         for a in self.agents}
        self.transcripts: dict[str, deque[str]] = {}
        self.pending_replies: list[Encounter] = []  # replies that open the next tick
        self._retrieved: dict[str, list[int]] = {}  # request id -> memory ids in its prompt
        self.quality = QualityLabeler(embedder)  # labels what agents say (messages.quality)
        self._heard: dict[str, list[str]] = {}  # lines said per place, as the prompts showed
        self.tick = 0  # last completed tick
        self.layers = list(cfg.layers)
        self.placebo_seed = modes.placebo_seed(cfg.seed)
        # Staggered reflection: agent i reflects on ticks = i (mod n), so each tick carries
        # about 1/n of the reflections instead of all of them every n-th tick.
        n = cfg.optimization.reflect_every_n_ticks
        self.reflect_offset = {a.agent_id: i % n for i, a in enumerate(self.agents)}
        knowers = seed_news([a.agent_id for a in self.agents], cfg.world.news_knowers, cfg.seed)
        for k in knowers:
            self.by_id[k].news_from, self.by_id[k].news_tick = "seed", 0
        # Tick-0 memories are rebuilt like this on resume, then replaced by the checkpoint's.
        self._tick0 = TickResult(0, [])  # its memory rows are logged with tick 1's
        self._remember([(k, f"I heard that {NEWS}.", IMPORTANCE["NEWS"]) for k in knowers], 0,
                       self._tick0)

    # --- one tick -------------------------------------------------------------------
    def run_tick(self, tick: int) -> TickResult:
        """Advance the world by tick `tick` (= self.tick + 1) and return its rows."""
        assert tick == self.tick + 1, f"tick {tick} after {self.tick}"
        t0 = time.perf_counter()
        cfg = self.cfg
        cap = cfg.max_events_per_tick
        carried = [e for e in self.pending_replies if self._still_together(e)][:cap]
        for e in carried:  # witnesses who left are no longer part of the exchange
            e.others = [o for o in e.others if self.by_id[o].location == e.location]
        self.pending_replies = []
        busy = {m for e in carried for m in (e.actor, *e.others)}
        rng = np.random.default_rng([cfg.seed, tick, 1])
        scheduled = schedule_encounters(
            {a.agent_id: a.location for a in self.agents if a.agent_id not in busy},
            cap - len(carried), rng)
        turns = self._numbered(carried + scheduled, 0)
        result = TickResult(tick, list(turns))
        if tick == 1:
            result.memories.extend(self._tick0.memories)
        reflecting = self._due_reflections(tick)
        stats = BatchStats()
        new_memories: list[tuple[str, str, float]] = []
        occupancy: dict[str, int] = {}
        for a in self.agents:
            occupancy[a.location] = occupancy.get(a.location, 0) + 1
        used = 0
        while turns:
            self._heard = {k: list(v) for k, v in self.transcripts.items()}
            requests = self._action_requests(turns, tick)
            if used == 0:
                requests += self._reflection_requests(reflecting, tick)
            generated = generate_all(self.backend, requests, cfg.optimization.batch_size, stats)
            # The request carries the steering and seed a row was generated with: log those.
            done = {r.request_id: (r, g) for r, g in zip(requests, generated, strict=True)}
            replies = [r for enc in turns
                       if (r := self._apply(enc, *done[f"a{tick}-{enc.event_id}"], tick,
                                            occupancy, result, new_memories))]
            if used == 0:
                for agent in reflecting:
                    self._reflect(agent, *done[f"r{tick}-{agent.agent_id}"], tick, result,
                                  new_memories)
            used += len(turns)
            turns = self._numbered(replies[:max(0, cap - used)], used)
            result.encounters += turns
            self.pending_replies = replies[max(0, cap - used):]
        self.quality.flush()
        self.rules.end_tick({r["agent_id"] for r in result.actions})
        self._remember(new_memories, tick, result)
        self._record_state(tick, result)
        self.tick = tick
        elapsed = time.perf_counter() - t0
        result.ticks.append({
            "run_id": self.run_id, "tick": tick, "events": len(result.encounters),
            "actions": len(result.actions), "messages": len(result.messages),
            "reflections": len(result.reflections),
            "successes": sum(r["success"] for r in result.actions),
            "tokens_in": sum(m["tokens_in"] for m in result.messages),
            "tokens_out": sum(m["tokens_out"] for m in result.messages),
            "batches": stats.batches, "tick_seconds": elapsed, "model_seconds": stats.seconds,
            "other_seconds": elapsed - stats.seconds,
        })
        return result

    @staticmethod
    def _numbered(encounters: list[Encounter], start: int) -> list[Encounter]:
        for i, e in enumerate(encounters):
            e.event_id = start + i
        return encounters

    def _still_together(self, enc: Encounter) -> bool:
        return all(self.by_id[m].location == enc.location for m in (enc.actor, enc.answering))

    def _request(self, request_id: str, agent: Agent, kind: str, system: str, user: str,
                 tick: int, max_new: int, options: tuple[str, ...] = (),
                 depth: int = 0) -> GenerationRequest:
        cfg = self.cfg
        caps = {}
        if cfg.inference.adaptive_tokens and kind == "action":
            caps = {k: min(v, cfg.inference.max_new_tokens)
                    for k, v in cfg.inference.max_new_tokens_by_action.items() if k != "REFLECT"}
        # A reply turn is an agent's second turn in a tick: its own seed (depth > 0).
        parts = (cfg.seed, tick, agent.agent_id, kind) + ((depth,) if depth else ())
        mode = cfg.steering.mode
        dose = agent.steering(cfg.steering.strength, mode != "off")
        how = modes.deliver(mode, dose, system, self.placebo_seed)
        return GenerationRequest(
            request_id=request_id,
            system=how.system, user=user,
            steering=how.steering, placebo_seed=how.placebo_seed, dose=dose,
            max_new_tokens=max_new, seed=derive_seed(*parts),
            kind=kind, token_caps=caps,
            stop_at_newline=kind == "action", options=options)

    def _action_requests(self, encounters: list[Encounter], tick: int) -> list[GenerationRequest]:
        if not encounters:
            return []
        actors = [self.by_id[e.actor] for e in encounters]
        queries = [f"{a.name} at {a.location} with "
                   f"{', '.join(self.name_of[o] for o in e.others) or 'nobody'}. {a.plan or a.goal}"
                   for a, e in zip(actors, encounters, strict=True)]
        q = self.embedder.embed(queries)
        out = []
        for i, (agent, enc) in enumerate(zip(actors, encounters, strict=True)):
            mems = self.memories[agent.agent_id].retrieve(q[i], tick, self.cfg.memory.retrieve_k)
            others = [self.name_of[o] for o in enc.others]
            inviter = self.name_of[agent.invite["from"]] if agent.invite else ""
            # A reply turn without a line answers an invitation (rules: INVITE's reply_by).
            answers_invite = inviter if enc.answering and not enc.line else ""
            answering = (self.name_of[enc.answering], enc.line) if enc.line else None
            user = prompts.action_prompt(agent, self.town, others,
                                         list(self.transcripts.get(enc.location, ())),
                                         [m.text for m in mems], tick, inviter, answering)
            req = self._request(f"a{tick}-{enc.event_id}", agent, "action",
                                prompts.persona(agent), user, tick,
                                self.cfg.inference.max_new_tokens,
                                prompts.action_options(agent, self.town, others,
                                                       answers_invite), enc.depth)
            self._retrieved[req.request_id] = [m.memory_id for m in mems]
            out.append(req)
        return out

    def _due_reflections(self, tick: int) -> list[Agent]:
        n = self.cfg.optimization.reflect_every_n_ticks
        # Lazy reflection: only agents with something new to think about since last time.
        return [a for a in self.agents if tick % n == self.reflect_offset[a.agent_id]
                and self.memories[a.agent_id].latest_tick() > a.last_reflection_tick]

    def _reflection_requests(self, agents: list[Agent], tick: int) -> list[GenerationRequest]:
        if not agents:
            return []
        q = self.embedder.embed([f"{a.name}'s goal: {a.goal}" for a in agents])
        max_new = min(self.cfg.inference.max_new_tokens,
                      self.cfg.inference.max_new_tokens_by_action.get("REFLECT", 10**6))
        out = []
        for i, agent in enumerate(agents):
            mems = self.memories[agent.agent_id].retrieve(q[i], tick, self.cfg.memory.retrieve_k)
            user = prompts.reflection_prompt(agent, [m.text for m in mems], tick)
            req = self._request(f"r{tick}-{agent.agent_id}", agent, "reflection",
                                prompts.reflection_persona(agent), user, tick, max_new)
            self._retrieved[req.request_id] = [m.memory_id for m in mems]
            out.append(req)
        return out

    # --- applying results -----------------------------------------------------------
    def _message_row(self, req: GenerationRequest, g: GenerationResult, agent: Agent,
                     tick: int, event_id: int, location: str) -> dict:
        row = {"run_id": self.run_id, "tick": tick, "event_id": event_id,
               "agent_id": agent.agent_id, "kind": req.kind, "location": location,
               "content": g.text, "tokens_in": g.tokens_in, "tokens_out": g.tokens_out,
               "strength": modes.logged_strength(self.cfg.steering.strength,
                                                 self.cfg.steering.mode),
               "steering_mode": self.cfg.steering.mode,
               "layers": self.layers, "seed": req.seed,
               "memory_ids": self._retrieved.pop(req.request_id, []),
               "prompt_hash": prompt_hash(req.system, req.user),
               "prompt": f"{req.system}\n\n{req.user}" if self.cfg.world.log_prompts else None,
               "quality": NOT_FREE_TEXT}
        row.update({f"alpha_{t}": req.dose[t] for t in TRAITS})
        return row

    def _apply(self, enc: Encounter, req: GenerationRequest, g: GenerationResult, tick: int,
               occupancy: dict[str, int], result: TickResult,
               new_memories: list[tuple[str, str, float]]) -> Encounter | None:
        """Apply one turn's action; returns the reply turn it opens, if any."""
        agent = self.by_id[enc.actor]
        action = parse_action(g.text, [self.name_of[o] for o in enc.others], self.town)
        where = agent.location
        out = self.rules.apply(agent, action, enc.others, occupancy, tick)
        msg = self._message_row(req, g, agent, tick, enc.event_id, where)
        result.messages.append(msg)
        self._submit_quality(msg, agent, action, where, enc)
        if req.options:
            result.decisions.append({
                "run_id": self.run_id, "tick": tick, "event_id": enc.event_id,
                "agent_id": agent.agent_id, "system": req.system, "user": req.user,
                "prompt_hash": prompt_hash(req.system, req.user), "options": list(req.options),
                "chosen_option": g.option, "option_logprob": g.option_logprob,
                **{f"alpha_{t}": req.dose[t] for t in TRAITS}, "seed": req.seed,
                "steering_mode": self.cfg.steering.mode})
        result.actions.append({
            "run_id": self.run_id, "tick": tick, "event_id": enc.event_id,
            "agent_id": agent.agent_id, "action_type": action.action_type,
            "target": action.target, "location": where, "location_after": out.location_after,
            "success": out.success, "failure_reason": out.reason, "parsed": action.parsed})
        for row in out.interactions:
            if row["type"] == "TALK" and enc.answering and row["target"] == enc.answering:
                row["detail"] = "reply"
            result.interactions.append({"run_id": self.run_id, "tick": tick,
                                        "event_id": enc.event_id, **row})
        new_memories.extend(out.memories)
        if not (out.success and action.action_type in ("TALK", "INVITE")):
            return None
        said = action.text if action.action_type == "TALK" else ""  # "" = an invitation
        if said:
            self.transcripts.setdefault(where, deque(maxlen=TRANSCRIPT_LINES)).append(
                f"{agent.name}: {said}")
        if not out.reply_by or enc.depth + 1 >= MAX_EXCHANGE:
            return None
        members = sorted({enc.actor, *enc.others} - {out.reply_by})
        return Encounter(-1, where, out.reply_by, members, answering=agent.agent_id,
                         line=said, depth=enc.depth + 1)

    def _submit_quality(self, msg: dict, agent: Agent, action: Action, where: str,
                        enc: Encounter) -> None:
        """Queue a message for its quality label (computed at the end of the tick)."""
        heard = [line.split(": ", 1)[-1] for line in self._heard.get(where, ())]
        if enc.line:
            heard.append(enc.line)
        loc = self.town.locations[where]
        self.quality.submit(msg, agent.agent_id, action.action_type, action.text,
                            situation_text(where, loc.description, loc.work, agent.goal,
                                           heard[-1] if heard else ""), heard)

    def _reflect(self, agent: Agent, req: GenerationRequest, g: GenerationResult, tick: int,
                 result: TickResult, new_memories: list[tuple[str, str, float]]) -> None:
        plan = " ".join(g.text.split())[:300]
        result.messages.append(self._message_row(req, g, agent, tick, -1, agent.location))
        result.reflections.append({"run_id": self.run_id, "tick": tick, "agent_id": agent.agent_id,
                                   "plan": plan, "memories_used": min(
                                       len(self.memories[agent.agent_id]),
                                       self.cfg.memory.retrieve_k)})
        agent.last_reflection_tick = tick
        if plan:
            agent.plan = plan
            new_memories.append((agent.agent_id, f"My plan: {plan}", IMPORTANCE["PLAN"]))

    def _remember(self, new: list[tuple[str, str, float]], tick: int, result: TickResult) -> None:
        """Embed all of a tick's new memories in one call, then store (and log) them."""
        if not new:
            return
        emb = self.embedder.embed([text for _, text, _ in new])
        for (agent_id, text, importance), e in zip(new, emb, strict=True):
            mid = self.memories[agent_id].add(text, importance, tick, e)
            result.memories.append({"run_id": self.run_id, "tick": tick, "agent_id": agent_id,
                                    "memory_id": mid, "text": text, "importance": importance})

    def _record_state(self, tick: int, result: TickResult) -> None:
        """Per-agent state and society metrics after the tick."""
        friends = self.ties.friend_counts()
        for a in self.agents:
            progress = update_goal(a, self.ties, tick, friends)
            result.agent_state.append({
                "run_id": self.run_id, "tick": tick, "agent_id": a.agent_id,
                "location": a.location, "coins": a.coins, "energy": a.energy,
                "earned": a.earned, "friends": friends.get(a.agent_id, 0),
                "places_visited": len(a.visited), "gathered": a.gathered,
                "goal_kind": spec_of(a).kind, "goal_progress": progress,
                "goal_done_tick": a.goal_done_tick or None, "knows_news": a.knows_news,
                "news_from": a.news_from or None,
                "news_tick": a.news_tick if a.knows_news else None})
        result.society.append({"run_id": self.run_id, "tick": tick, **society_row(
            self.ties.edges(), sum(friends.values()) // 2, [a.coins for a in self.agents],
            [a.energy for a in self.agents], sum(a.goal_done_tick > 0 for a in self.agents),
            sum(a.knows_news for a in self.agents))})
