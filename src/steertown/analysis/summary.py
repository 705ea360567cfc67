"""`analyze_run`: the guide's post-simulation analysis of one run directory, as JSON.

Sections (the guide's list plus behaviour against traits): action distribution, agent
activity, token usage, steering profiles, temporal dynamics, success/failure rates,
behaviour vs traits, timings, the quality of agents' free text (usable share, labels, Talk
share where someone was present), the society (analysis/society.py) and the behavioural
fingerprint (analysis/fingerprint.py). Written to `<run_dir>/analysis/summary.json`.
"""

from __future__ import annotations

import math
import statistics
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from steertown.analysis import queries as q
from steertown.analysis import society
from steertown.analysis.fingerprint import fingerprint, fingerprint_metrics
from steertown.analysis.society import society_metrics
from steertown.storage.run_dir import RunDir, atomic_write_json

SUMMARY_FILE = "summary.json"
FINGERPRINT_BOOT = 500  # agent-bootstrap resamples per (rate, trait) correlation


def _spread(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "min": None, "max": None, "std": None}
    return {"mean": round(statistics.fmean(values), 6), "min": min(values), "max": max(values),
            "std": round(statistics.pstdev(values), 6)}


def _behaviour(con) -> dict[str, Any]:
    matrix = q.behaviour_correlations(con)
    by_pair = {(r["action_type"], r["trait"]): r for r in matrix}
    hypotheses = []
    for action, trait in q.BEHAVIOUR_PAIRS:
        r = by_pair.get((action, trait))
        hypotheses.append({"action_type": action, "trait": trait, "present": r is not None,
                           "agents": r["agents"] if r else 0,
                           "pearson": r["pearson"] if r else None,
                           "spearman": r["spearman"] if r else None})
    return {"hypotheses": hypotheses, "matrix": matrix}


def _text_quality(con) -> dict[str, Any]:
    """Share of usable free text (Talk/Work lines labelled `ok`) and the label breakdown."""
    by_type = q.quality_labels(con)
    labels: dict[str, int] = {}
    for r in by_type:
        labels[r["label"]] = labels.get(r["label"], 0) + r["count"]
    labelled = sum(n for lab, n in labels.items() if lab != "unlabelled")
    met = q.talk_when_met(con)
    return {
        "free_text_lines": sum(labels.values()),
        "usable_share": round(labels.get("ok", 0) / labelled, 6) if labelled else None,
        "labels": dict(sorted(labels.items(), key=lambda kv: (-kv[1], kv[0]))),
        "by_action_type": by_type,
        "talk_when_met": {**met, "share": round(met["talks"] / met["decisions"], 6)
                          if met.get("decisions") else None},
    }


def key_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """Flat numeric headline metrics of a summary (what MLflow logs and `compare` reads)."""
    c, tok, tim, st = (summary["counts"], summary["tokens"]["totals"], summary["timings"],
                       summary["steering"])
    m: dict[str, float | None] = {
        "actions": c["actions"], "messages": c["messages"], "ticks": c["ticks"],
        "agents": c["agents"],
        "success_rate": summary["success"]["overall_rate"],
        "actions_per_tick": c["actions"] / c["ticks"] if c["ticks"] else None,
        "tokens_in": tok["tokens_in"], "tokens_out": tok["tokens_out"],
        "tokens_out_per_message": tok["mean_tokens_out"],
        "mean_tick_seconds": tim.get("mean_tick_seconds"),
        "total_tick_seconds": tim.get("total_tick_seconds"),
        "model_seconds_share": tim.get("model_seconds_share"),
        "nonzero_steering_share": st["presence"].get("nonzero_share"),
        "usable_text_share": summary["text_quality"]["usable_share"],
        "talk_share_when_met": summary["text_quality"]["talk_when_met"]["share"],
    }
    for row in st["traits"]:
        m[f"alpha_mean_{row['trait']}"] = row["logged_mean"]
    for h in summary["behaviour_vs_trait"]["hypotheses"]:
        m[f"spearman_{h['action_type']}_{h['trait']}"] = h["spearman"]
    m.update(fingerprint_metrics(summary.get("fingerprint") or []))
    m.update(society_metrics(summary.get("society") or {}))
    return {k: float(v) for k, v in m.items()
            if isinstance(v, int | float) and not (isinstance(v, float) and math.isnan(v))}


def analyze_run(run_dir: Path) -> dict[str, Any]:
    """Analyse a run directory with DuckDB; write and return `analysis/summary.json`."""
    rd = RunDir(run_dir).require()
    manifest = rd.read_manifest()
    con = q.connect(rd.path)
    try:
        activity = q.agent_activity(con)
        by_tick = q.per_tick(con)
        tokens = q.token_totals(con)
        success_types = q.success_by_action_type(con)
        n_actions = sum(r["n"] for r in success_types)
        n_success = sum(r["successes"] for r in success_types)
        counts = {
            "agents": q.one(con, "SELECT count(*) AS n FROM agents")["n"],
            "actions": n_actions,
            "messages": tokens["messages"],
            "reflections": q.one(con, "SELECT count(*) AS n FROM reflections")["n"],
            "ticks": len(by_tick),
        }
        summary: dict[str, Any] = {
            "run_id": manifest.get("run_id", rd.run_id),
            "arm": manifest.get("arm"),
            "source": manifest.get("source", "steertown"),
            "status": manifest.get("status"),
            "model": manifest.get("model")
                     or {"name": ((manifest.get("config") or {}).get("model") or {}).get("name")},
            "generated": datetime.now(UTC).isoformat(timespec="seconds"),
            "counts": counts,
            "action_distribution": q.action_distribution(con),
            "agent_activity": {
                "actions": _spread([r["actions"] for r in activity]),
                "messages": _spread([r["messages"] for r in activity]),
                "idle_agents": sum(1 for r in activity if r["actions"] == 0),
                "per_agent": activity,
            },
            "tokens": {
                "totals": tokens,
                "by_action_type": q.tokens_by_action_type(con),
                "by_kind": q.tokens_by_kind(con),
                "by_agent": [{k: r[k] for k in ("agent_id", "messages", "tokens_in", "tokens_out")}
                             for r in activity],
                "by_tick": [{k: r[k] for k in ("tick", "tokens_in", "tokens_out")}
                            for r in by_tick],
            },
            "steering": {
                "presence": q.steering_presence(con),
                "traits": q.trait_stats(con),
                "profiles": q.steering_profiles(con),
            },
            "temporal": {"by_tick": by_tick, "moves": q.moves(con)},
            "success": {
                "overall_rate": round(n_success / n_actions, 6) if n_actions else None,
                "successes": n_success,
                "by_action_type": success_types,
                "by_trait_band": q.success_by_trait_band(con),
                "band_thresholds": [q.BAND_LOW, q.BAND_HIGH],
                "failure_reasons": q.failure_reasons(con),
            },
            "behaviour_vs_trait": _behaviour(con),
            "text_quality": _text_quality(con),
            "timings": q.timings(con),
        }
    finally:
        con.close()
    con = society.connect(rd.path)
    try:
        summary["society"] = society.society_summary(con)
    finally:
        con.close()
    # Trait x behaviour: Spearman of every per-agent rate with every trait (fingerprint.py).
    summary["fingerprint"] = fingerprint(rd.path, n_boot=FINGERPRINT_BOOT)
    summary["key_metrics"] = key_metrics(summary)
    atomic_write_json(rd.path / "analysis" / SUMMARY_FILE, summary)
    return summary

