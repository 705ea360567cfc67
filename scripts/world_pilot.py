"""Print the world pilot's numbers (docs/world.md) for one run directory.

Usage: python scripts/world_pilot.py <run_dir> [<run_dir> ...]
   e.g. python scripts/world_pilot.py /work/study-data/world/dumps/pilot-1

Reads the run's tables with DuckDB (steertown.analysis.society.connect); writes nothing.
Prints: action shares (Invite and Accept included, replies counted), goals met at the
last tick, the energy distribution at the last tick, and density / news reach / goals met /
Gini of coins at ticks 1, 10, 20, 30, 40 (those the run has), then the pilot's targets.
"""

from __future__ import annotations

import sys

from steertown.analysis.queries import rows
from steertown.analysis.society import connect

KINDS = ("WORK", "MOVE", "TALK", "REST", "HELP", "INVITE", "ACCEPT")
SNAPSHOT_TICKS = (1, 10, 20, 30, 40)


def pilot(run_dir: str) -> dict:
    """The pilot's numbers of one run as a dict (also what `main` prints)."""
    con = connect(run_dir)
    counts = {r["action_type"]: r["n"] for r in rows(
        con, "SELECT action_type, count(*) AS n FROM actions GROUP BY 1")}
    ok = {r["action_type"]: r["n"] for r in rows(
        con, "SELECT action_type, count(*) AS n FROM actions WHERE success GROUP BY 1")}
    total = sum(counts.values())
    last = rows(con, "SELECT max(tick) AS t FROM agent_state")[0]["t"]
    state = rows(con, "SELECT energy, goal_done_tick, goal_kind, goal_progress FROM agent_state "
                      "WHERE tick = ?", [last])
    energy = sorted(r["energy"] for r in state)
    by_kind = rows(con, "SELECT goal_kind, count(*) AS n, count(goal_done_tick) AS met "
                        "FROM agent_state WHERE tick = ? GROUP BY 1 ORDER BY 1", [last])
    society = rows(con, "SELECT tick, density, news_reach, goals_met, gini_coins, mean_energy "
                        "FROM society ORDER BY tick")
    return {"actions": total, "counts": counts, "successes": ok, "last_tick": last,
            "agents": len(state), "goals_met": sum(r["goal_done_tick"] is not None
                                                   for r in state),
            "goals_by_kind": by_kind, "energy": energy, "society": society}


def _share(n: int, total: int) -> str:
    return f"{n} ({100 * n / total:.1f}%)" if total else "0"


def main(run_dirs: list[str]) -> int:
    for run_dir in run_dirs:
        p = pilot(run_dir)
        total, counts = p["actions"], p["counts"]
        print(f"# {run_dir}: {total} actions over {p['last_tick']} ticks, {p['agents']} agents\n")
        print("actions: " + ", ".join(
            f"{k.title()} {_share(counts.get(k, 0), total)} [{p['successes'].get(k, 0)} ok]"
            for k in KINDS))
        e = p["energy"]
        low = sum(x <= 2 for x in e)
        print(f"goals met at tick {p['last_tick']}: {p['goals_met']} of {p['agents']}  ("
              + ", ".join(f"{r['goal_kind']} {r['met']}/{r['n']}" for r in p["goals_by_kind"])
              + ")")
        print(f"energy at tick {p['last_tick']}: mean {sum(e) / len(e):.1f}, median "
              f"{e[len(e) // 2]}, min {e[0]}, max {e[-1]}; {low} of {len(e)} agents at <= 2")
        print("\n| tick | density | news reach | goals met | Gini coins | mean energy |")
        print("|---|---|---|---|---|---|")
        for r in p["society"]:
            if r["tick"] in SNAPSHOT_TICKS or r["tick"] == p["last_tick"]:
                print(f"| {r['tick']} | {r['density']:.3f} | {r['news_reach']:.2f} | "
                      f"{r['goals_met']} | {r['gini_coins']:.3f} | {r['mean_energy']:.1f} |")
        share = {k: counts.get(k, 0) / total if total else 0.0 for k in KINDS}
        first, end = p["society"][0], p["society"][-1]
        targets = {
            "every action type chosen": all(counts.get(k, 0) > 0 for k in KINDS),
            "Invite >= 1%": share["INVITE"] >= 0.01,
            "Accept >= 1%": share["ACCEPT"] >= 0.01,
            "goals met >= 1/4": p["goals_met"] * 4 >= p["agents"],
            "energy > 2 for most agents": (len(e) - low) * 2 > len(e),
            "society metrics change": all(first[k] != end[k] for k in
                                          ("density", "news_reach", "goals_met", "gini_coins")),
        }
        print("\ntargets: " + ", ".join(f"{k}: {'yes' if v else 'NO'}"
                                        for k, v in targets.items()) + "\n")
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print("usage: python scripts/world_pilot.py <run_dir> [...]", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1:]))
