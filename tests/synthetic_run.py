"""A small synthetic steertown run directory with hand-computable answers.

Four agents, three ticks, 11 actions (TALK 2, WORK 4, MOVE 2, REST 3; 9 succeed), one
message per action plus one reflection message, tick timings 2/3/4 s (model 1/1.5/3 s).
Tests compare the analysis against the numbers written here.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from steertown.config import RunConfig
from steertown.storage.run_dir import RunDir

AGENTS = {  # agent_id: (E, A, C, O, N)
    "a0": (0.8, 0.0, -0.5, 0.1, -0.8),
    "a1": (-0.8, 0.2, 0.8, -0.4, 0.5),
    "a2": (0.0, -0.6, 0.0, 0.0, 0.0),
    "a3": (0.5, 0.4, -0.2, 0.6, 0.9),
}
TRAITS = ("E", "A", "C", "O", "N")
TOKENS_OUT = {"TALK": 40, "WORK": 20, "MOVE": 10, "REST": 5}

# tick -> [(agent, action, location, location_after, success, failure_reason, parsed)]
ACTIONS = {
    1: [("a0", "TALK", "square", "square", True, None, True),
        ("a1", "WORK", "library", "library", True, None, True),
        ("a2", "MOVE", "square", "cafe", True, None, True),
        ("a3", "REST", "home", "home", False, "busy", True)],
    2: [("a0", "TALK", "square", "square", True, None, True),
        ("a1", "WORK", "library", "library", True, None, True),
        ("a2", "WORK", "cafe", "cafe", False, "unparseable", False),
        ("a3", "REST", "home", "home", True, None, True)],
    3: [("a0", "MOVE", "square", "park", True, None, True),
        ("a1", "WORK", "library", "library", True, None, True),
        ("a3", "REST", "home", "home", True, None, True)],
}
# Free-text quality labels of the Talk/Work messages (Move/Rest: none): 3 of 6 usable.
QUALITY = {(1, "a0"): "ok", (2, "a0"): "repeat", (1, "a1"): "ok", (2, "a1"): "template_leak",
           (2, "a2"): "garbage", (3, "a1"): "ok"}
# Decisions with someone present (a Talk option offered): 3, of which 2 chose Talk.
DECISIONS = {(1, "a0"): (["Talk A1:", "Work: I", "Rest"], "Talk A1:"),
             (1, "a1"): (["Work: I", "Rest"], "Work: I"),
             (2, "a0"): (["Move park", "Talk A2:", "Work: I"], "Talk A2:"),
             (2, "a2"): (["Talk A3:", "Work: I", "Rest"], "Work: I")}
TICK_SECONDS = {1: (2.0, 1.0), 2: (3.0, 1.5), 3: (4.0, 3.0)}  # tick: (tick_s, model_s)


def build_run(storage: Path, run_id: str = "synth", arm: str = "fast", seed: int = 0,
              time_scale: float = 1.0, verification: dict | None = None) -> Path:
    """Write the synthetic run under `storage/run_id` and return its path."""
    rd = RunDir(storage / run_id)
    rd.path.mkdir(parents=True, exist_ok=True)
    cfg = RunConfig(arm=arm, run_id=run_id, seed=seed, population=len(AGENTS), steps=3)
    cfg.model.name = "mock"
    rd.write_manifest({
        "run_id": run_id, "arm": arm, "config": cfg.to_dict(), "config_hash": cfg.config_hash(),
        "status": "complete", "ticks_done": 3, "steps": 3,
        "model": {"name": "mock", "backend": "mock"}, "versions": {"python": "3.11"},
        "created": dt.datetime(2026, 1, 1, tzinfo=dt.UTC).isoformat(), "git_sha": "abc123",
        "preflight": [{"name": "device", "ok": True, "detail": "cpu"}],
    })
    rd.write_agents([
        {"run_id": run_id, "agent_id": a, "name": a.upper(), "home": "home", "goal": "live",
         **dict(zip(TRAITS, v, strict=True))}
        for a, v in AGENTS.items()])
    for tick, acts in ACTIONS.items():
        actions, messages, decisions = [], [], []
        for ev, (agent, atype, loc, loc_after, ok, reason, parsed) in enumerate(acts):
            actions.append({"run_id": run_id, "tick": tick, "event_id": ev, "agent_id": agent,
                            "action_type": atype, "target": None, "location": loc,
                            "location_after": loc_after, "success": ok,
                            "failure_reason": reason, "parsed": parsed})
            messages.append(_message(run_id, tick, ev, agent, "action", loc, 100,
                                     TOKENS_OUT[atype]) | {"quality": QUALITY.get((tick, agent),
                                                                                 "none")})
            if (tick, agent) in DECISIONS:
                options, chosen = DECISIONS[(tick, agent)]
                decisions.append({"run_id": run_id, "tick": tick, "event_id": ev,
                                  "agent_id": agent, "options": options,
                                  "chosen_option": chosen})
        reflections = []
        if tick == 3:
            messages.append(_message(run_id, tick, -1, "a0", "reflection", "square", 200, 30))
            reflections.append({"run_id": run_id, "tick": tick, "agent_id": "a0",
                                "plan": "talk more", "memories_used": 4})
        tick_s, model_s = TICK_SECONDS[tick]
        ticks = [{"run_id": run_id, "tick": tick, "events": len(acts), "actions": len(acts),
                  "messages": len(messages), "reflections": len(reflections),
                  "successes": sum(a["success"] for a in actions),
                  "tokens_in": sum(m["tokens_in"] for m in messages),
                  "tokens_out": sum(m["tokens_out"] for m in messages), "batches": 1,
                  "tick_seconds": tick_s * time_scale, "model_seconds": model_s * time_scale,
                  "other_seconds": (tick_s - model_s) * time_scale}]
        rd.write_tick(tick, {"actions": actions, "messages": messages,
                             "reflections": reflections, "ticks": ticks,
                             "decisions": decisions})
    if verification is not None:
        from steertown.storage.run_dir import atomic_write_json
        atomic_write_json(rd.path / "verification" / "report.json", verification)
    return rd.path


def _message(run_id: str, tick: int, ev: int, agent: str, kind: str, loc: str,
             tokens_in: int, tokens_out: int) -> dict:
    coeffs = dict(zip(TRAITS, AGENTS[agent], strict=True))
    return {"run_id": run_id, "tick": tick, "event_id": ev, "agent_id": agent, "kind": kind,
            "location": loc, "content": f"{agent} {kind} at tick {tick}",
            "tokens_in": tokens_in, "tokens_out": tokens_out,
            **{f"alpha_{t}": v for t, v in coeffs.items()},
            "strength": 1.0, "layers": [16], "seed": tick * 100 + ev, "quality": "none"}


VERIFICATION = {
    "verdict": "pass",
    "checks": [
        {"name": "steering values present", "passed": True, "required": True,
         "figure": 1.0, "detail": "100% of messages carry non-zero alphas"},
        {"name": "dose response E", "passed": False, "required": False,
         "figure": 0.12, "detail": "rho below 0.2 <script>alert(1)</script>"},
    ],
}
