"""The guide's logged-steering checks: alphas present, varying, diverse across agents.

These read only the run's message files, so they also work on imported legacy runs.
They show the steering was *applied and logged*, not that it changed behaviour; the
model-based checks do that.
"""

from __future__ import annotations

from steertown.config import TRAITS
from steertown.storage.run_dir import RunDir, RunDirError
from steertown.storage.run_tables import new_connection, source_sql
from steertown.verification.check import Check


def logged_checks(run: RunDir, num_files: int = 0, min_variance: float = 1e-4) -> list[Check]:
    """The three checks of the guide's verify_steering.py, with its summary figures."""
    files = run.check_schema("messages", num_files)  # clear error for foreign files
    if not files:
        raise RunDirError(f"{run.table_dir('messages')}: no message files to verify")
    con = new_connection()
    con.execute(f"CREATE VIEW m AS SELECT * FROM {source_sql(files)}")
    alpha = [f"alpha_{t}" for t in TRAITS]
    n, null_rows = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE {' OR '.join(a + ' IS NULL' for a in alpha)}) "
        "FROM m").fetchone()
    nonzero = con.execute(
        f"SELECT avg(CASE WHEN {' OR '.join(f'abs({a}) > 1e-9' for a in alpha)} THEN 1 ELSE 0 END)"
        " FROM m").fetchone()[0] or 0.0
    row_var = con.execute(
        f"SELECT {', '.join(f'coalesce(var_samp({a}), 0)' for a in alpha)} FROM m").fetchone()
    per_agent = con.execute(
        f"SELECT {', '.join(f'coalesce(var_samp(a_{t}), 0)' for t in TRAITS)}, count(*) FROM ("
        f"SELECT agent_id, {', '.join(f'avg(alpha_{t}) AS a_{t}' for t in TRAITS)} "
        "FROM m GROUP BY agent_id)").fetchone()
    means = con.execute(f"SELECT {', '.join(f'avg({a})' for a in alpha)} FROM m").fetchone()
    agents_steered = con.execute(
        f"SELECT count(DISTINCT agent_id) FROM m WHERE "
        f"{' OR '.join(f'abs({a}) > 1e-9' for a in alpha)}").fetchone()[0]
    max_abs = con.execute(f"SELECT {', '.join(f'coalesce(max(abs({a})), 0)' for a in alpha)} "
                          "FROM m").fetchone()
    steered = [t for t, v in zip(TRAITS, max_abs, strict=True) if v > 1e-9]
    agent_var = dict(zip(TRAITS, per_agent[:5], strict=True))
    row_var_by = dict(zip(TRAITS, row_var, strict=True))
    # Every steered trait must vary (one varying trait must not carry four constant ones).
    # Relative to the trait's scale (max |alpha|^2): a weakly steered run (strength 0.01)
    # still varies; only constant alphas are "still".
    scale = dict(zip(TRAITS, (v * v for v in max_abs), strict=True))
    still_rows = [t for t in steered if row_var_by[t] <= min_variance * scale[t]]
    still_agents = [t for t in steered if agent_var[t] <= min_variance * scale[t]]
    mean_traits = dict(zip(TRAITS, (m or 0.0 for m in means), strict=True))
    present = n > 0 and null_rows == 0
    return [
        Check("logged.present", present, True,
              f"{n - null_rows}/{n} message rows carry steering values",
              data={"rows": n, "missing": null_rows}),
        Check("logged.variation", bool(steered) and not still_rows, True,
              "row variance per trait " + " ".join(f"{t}:{v:.3f}" for t, v in
                                                   row_var_by.items()),
              detail=(f"steered but constant: {', '.join(still_rows)}" if still_rows
                      else "" if steered else "no trait is steered"),
              data={"row_variance": row_var_by}),
        Check("logged.diversity", per_agent[5] > 1 and bool(steered) and not still_agents,
              True, f"{per_agent[5]} agents; variance across agents "
              + " ".join(f"{t}:{v:.3f}" for t, v in agent_var.items()),
              detail=f"steered but the same for every agent: {', '.join(still_agents)}"
              if still_agents else "",
              data={"agents": per_agent[5], "agent_variance": agent_var}),
        Check("logged.nonzero_share", None if nonzero == 0 and n == 0 else nonzero > 0, False,
              f"{100 * nonzero:.0f}% of messages have non-zero steering; "
              f"{agents_steered} agents steered; mean traits "
              + ", ".join(f"{t}:{v:+.2f}" for t, v in mean_traits.items()),
              data={"nonzero_share": nonzero, "agents_steered": agents_steered,
                    "mean_traits": mean_traits}),
    ]
