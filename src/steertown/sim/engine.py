"""The tick engine: schedule encounters, build prompts, batch-generate, apply actions.

All randomness of a tick comes from generators derived from (seed, tick), and every
generation carries a seed derived from (seed, tick, agent), so a tick's output depends
only on the state at its start: this is what makes resume from a checkpoint exact.
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from steertown.agents import prompts
from steertown.agents.memory import MemoryStream
from steertown.agents.profile import Agent, sample_population
from steertown.agents.text_quality import NOT_FREE_TEXT, QualityLabeler, situation_text
from steertown.config import TRAITS, RunConfig
from steertown.inference.backend import Backend, GenerationRequest, GenerationResult
from steertown.inference.batching import BatchStats, generate_all
from steertown.world.actions import Action, apply_action, parse_action
from steertown.world.scheduler import Encounter, schedule_encounters
from steertown.world.town import Town

IMPORTANCE = {"MOVE": 2.0, "TALK": 5.0, "WORK": 4.0, "REST": 1.0, "HEARD": 5.0, "PLAN": 8.0}
TRANSCRIPT_LINES = 3


class Embedder(Protocol):
    def embed(self, texts: list[str]) -> np.ndarray: ...


def derive_seed(*parts: Any) -> int:
    """A stable 63-bit seed from any parts (independent of Python's hash salt)."""
    h = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") >> 1


@dataclass
class TickResult:
    tick: int
    encounters: list[Encounter]
    actions: list[dict] = field(default_factory=list)
    messages: list[dict] = field(default_factory=list)
    reflections: list[dict] = field(default_factory=list)
    decisions: list[dict] = field(default_factory=list)
    ticks: list[dict] = field(default_factory=list)

    def rows(self) -> dict[str, list[dict]]:
        return {"actions": self.actions, "messages": self.messages,
                "reflections": self.reflections, "decisions": self.decisions,
                "ticks": self.ticks}


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
        dim = int(embedder.embed(["dimension probe"]).shape[1])
        self.memories = {a.agent_id: MemoryStream(cfg.memory.max_memories, dim,
                                                  cfg.memory.recency_decay)
                         for a in self.agents}
        self.transcripts: dict[str, deque[str]] = {}
        self.quality = QualityLabeler(embedder)  # labels what agents say (messages.quality)
        self._heard: dict[str, list[str]] = {}
        self.tick = 0  # last completed tick
        self.layers = list(cfg.layers)

    # --- one tick -------------------------------------------------------------------
    def run_tick(self, tick: int) -> TickResult:
        """Advance the world by tick `tick` (= self.tick + 1) and return its rows."""
        assert tick == self.tick + 1, f"tick {tick} after {self.tick}"
        t0 = time.perf_counter()
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, tick, 1])
        encounters = schedule_encounters({a.agent_id: a.location for a in self.agents},
                                         cfg.max_events_per_tick, rng)
        result = TickResult(tick, encounters)
        requests = self._action_requests(encounters, tick)
        reflecting = self._due_reflections(tick)
        requests += self._reflection_requests(reflecting, tick)
        stats = BatchStats()
        generated = generate_all(self.backend, requests, cfg.optimization.batch_size, stats)
        # The request carries the steering and seed a row was generated with: log those.
        done = {r.request_id: (r, g) for r, g in zip(requests, generated, strict=True)}
        new_memories: list[tuple[str, str, float]] = []
        occupancy: dict[str, int] = {}
        for a in self.agents:
            occupancy[a.location] = occupancy.get(a.location, 0) + 1
        self._heard = {k: list(v) for k, v in self.transcripts.items()}  # what prompts showed
        for enc in encounters:
            self._apply(enc, *done[f"a{tick}-{enc.event_id}"], tick, occupancy, result,
                        new_memories)
        for agent in reflecting:
            self._reflect(agent, *done[f"r{tick}-{agent.agent_id}"], tick, result, new_memories)
        self.quality.flush()
        self._remember(new_memories, tick)
        self.tick = tick
        elapsed = time.perf_counter() - t0
        result.ticks.append({
            "run_id": self.run_id, "tick": tick, "events": len(encounters),
            "actions": len(result.actions), "messages": len(result.messages),
            "reflections": len(result.reflections),
            "successes": sum(r["success"] for r in result.actions),
            "tokens_in": sum(m["tokens_in"] for m in result.messages),
            "tokens_out": sum(m["tokens_out"] for m in result.messages),
            "batches": stats.batches, "tick_seconds": elapsed, "model_seconds": stats.seconds,
            "other_seconds": elapsed - stats.seconds,
        })
        return result

    def _request(self, request_id: str, agent: Agent, kind: str, system: str, user: str,
                 tick: int, max_new: int, options: tuple[str, ...] = ()) -> GenerationRequest:
        cfg = self.cfg
        caps = {}
        if cfg.inference.adaptive_tokens and kind == "action":
            caps = {k: min(v, cfg.inference.max_new_tokens)
                    for k, v in cfg.inference.max_new_tokens_by_action.items() if k != "REFLECT"}
        return GenerationRequest(
            request_id=request_id,
            system=system, user=user,
            steering=agent.steering(cfg.steering.strength, cfg.steering.enabled),
            max_new_tokens=max_new, seed=derive_seed(cfg.seed, tick, agent.agent_id, kind),
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
            user = prompts.action_prompt(agent, self.town, others,
                                         list(self.transcripts.get(enc.location, ())),
                                         [m.text for m in mems], tick)
            out.append(self._request(f"a{tick}-{enc.event_id}", agent, "action",
                                     prompts.persona(agent), user, tick,
                                     self.cfg.inference.max_new_tokens,
                                     prompts.action_options(agent, self.town, others)))
        return out

    def _due_reflections(self, tick: int) -> list[Agent]:
        n = self.cfg.optimization.reflect_every_n_ticks
        if tick % n != 0:
            return []
        # Lazy reflection: only agents with something new to think about since last time.
        return [a for a in self.agents
                if self.memories[a.agent_id].latest_tick() > a.last_reflection_tick]

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
            out.append(self._request(f"r{tick}-{agent.agent_id}", agent, "reflection",
                                     prompts.reflection_persona(agent), user, tick, max_new))
        return out

    # --- applying results -----------------------------------------------------------
    def _message_row(self, req: GenerationRequest, g: GenerationResult, agent: Agent,
                     tick: int, event_id: int, location: str) -> dict:
        row = {"run_id": self.run_id, "tick": tick, "event_id": event_id,
               "agent_id": agent.agent_id, "kind": req.kind, "location": location,
               "content": g.text, "tokens_in": g.tokens_in, "tokens_out": g.tokens_out,
               "strength": self.cfg.steering.strength if self.cfg.steering.enabled else 0.0,
               "layers": self.layers, "seed": req.seed, "quality": NOT_FREE_TEXT}
        row.update({f"alpha_{t}": req.steering[t] for t in TRAITS})
        return row

    def _apply(self, enc: Encounter, req: GenerationRequest, g: GenerationResult, tick: int,
               occupancy: dict[str, int], result: TickResult,
               new_memories: list[tuple[str, str, float]]) -> None:
        agent = self.by_id[enc.actor]
        others = [self.name_of[o] for o in enc.others]
        action: Action = parse_action(g.text, others, self.town)
        where = agent.location
        ok, reason, after = apply_action(action, where, not enc.others, self.town, occupancy)
        agent.location = after
        if not ok:
            agent.failures += 1
        msg = self._message_row(req, g, agent, tick, enc.event_id, where)
        result.messages.append(msg)
        self._submit_quality(msg, agent, action, where)
        if req.options:
            result.decisions.append({
                "run_id": self.run_id, "tick": tick, "event_id": enc.event_id,
                "agent_id": agent.agent_id, "system": req.system, "user": req.user,
                "prompt_hash": prompt_hash(req.system, req.user), "options": list(req.options),
                "chosen_option": g.option, "option_logprob": g.option_logprob,
                **{f"alpha_{t}": req.steering[t] for t in TRAITS}, "seed": req.seed})
        result.actions.append({
            "run_id": self.run_id, "tick": tick, "event_id": enc.event_id,
            "agent_id": agent.agent_id, "action_type": action.action_type,
            "target": action.target, "location": where, "location_after": after,
            "success": ok, "failure_reason": reason, "parsed": action.parsed})
        if not ok:
            new_memories.append((agent.agent_id, f"I tried to {action.action_type.lower()} at "
                                 f"{where} but failed ({reason}).", 2.0))
            return
        if action.action_type == "TALK":
            line = f"{agent.name}: {action.text}"
            self.transcripts.setdefault(where, deque(maxlen=TRANSCRIPT_LINES)).append(line)
            new_memories.append((agent.agent_id, f"I said to {action.target or 'everyone'} "
                                 f"at {where}: {action.text}", IMPORTANCE["TALK"]))
            for o in enc.others:
                new_memories.append((o, f"{agent.name} said at {where}: {action.text}",
                                     IMPORTANCE["HEARD"]))
        elif action.action_type == "MOVE":
            new_memories.append((agent.agent_id, f"I went from {where} to {after}.",
                                 IMPORTANCE["MOVE"]))
        elif action.action_type == "WORK":
            what = action.text or self.town.locations[where].work
            new_memories.append((agent.agent_id, f"I worked at {where}: {what}", IMPORTANCE["WORK"]))
        else:
            new_memories.append((agent.agent_id, f"I rested at {where}.", IMPORTANCE["REST"]))

    def _submit_quality(self, msg: dict, agent: Agent, action: Action, where: str) -> None:
        """Queue a message for its quality label (computed at the end of the tick)."""
        heard = [line.split(": ", 1)[-1] for line in self._heard.get(where, ())]
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

    def _remember(self, new: list[tuple[str, str, float]], tick: int) -> None:
        """Embed all of a tick's new memories in one call, then store them."""
        if not new:
            return
        emb = self.embedder.embed([text for _, text, _ in new])
        for (agent_id, text, importance), e in zip(new, emb, strict=True):
            self.memories[agent_id].add(text, importance, tick, e)

