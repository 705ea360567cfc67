"""Print the numbers of docs/verification.md ("What a run's agents did") for a verified run.

Usage: python scripts/verdict_numbers.py storage/dumps/<run_id>   (after `steertown verify`)
Reads verification/report.json and the run's tables; writes nothing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from steertown.analysis.fingerprint import agent_rates, fingerprint

TRAITS = ["E", "A", "C", "O", "N"]


def _ci(d: dict, key: str = "") -> str:
    p = f"{key}_" if key else ""
    return f"{d[key or 'rho']:+.2f} [{d[p + 'ci_low']:+.2f}..{d[p + 'ci_high']:+.2f}]"


def main(run_dir: str) -> int:
    run = Path(run_dir)
    report = json.loads((run / "verification" / "report.json").read_text())
    checks = {c["name"]: c for c in report["checks"]}
    print(f"# {report['run_id']}: verdict {report['verdict']}\n")
    print("## Decisions in situ\n")
    if "decisions.replay" in checks:
        print(f"- replay: {checks['decisions.replay']['figure']}\n")
    rows = [(t, checks[f"decisions.{t}"]) for t in TRAITS if f"decisions.{t}" in checks]
    classes = sorted({k[6:] for _, c in rows for k in c["data"]
                      if k.startswith("shift_") and not k.endswith(("_ci_low", "_ci_high"))})
    print("| trait | rho (95% CI) | best random | pass | "
          + " | ".join(f"P({c}) per unit" for c in classes) + " |")
    print("|---" * (4 + len(classes)) + "|")
    for t, c in rows:
        d = c["data"]
        if "rho" not in d:
            print(f"| {t} | {c['figure']} | | FAIL |" + " |" * len(classes))
            continue
        cells = [(_ci(d, f"shift_{k}") if f"shift_{k}" in d else "") for k in classes]
        print(f"| {t} | {_ci(d)} | {d['random_max']:+.2f} | {'yes' if c['passed'] else 'no'} | "
              + " | ".join(cells) + " |")
    print("\n## Text measure vs activation projection vs dose-response\n")
    print("| trait | dose margin slope | in-run (activation) rho | text (MiniLM) rho |")
    print("|---|---|---|---|")
    for t in TRAITS:
        dose = checks.get(f"dose.margin.{t}", {}).get("data", {})
        inrun = checks.get(f"inrun.{t}", {}).get("data", {})
        text = checks.get(f"text.{t}", {}).get("data", {})
        print(f"| {t} | {dose.get('slope', float('nan')):+.3f} | "
              f"{_ci(inrun) if 'rho' in inrun else '-'} | {_ci(text) if 'rho' in text else '-'} |")
    if "text.agreement" in checks:
        print(f"\n{checks['text.agreement']['figure']}")
    print("\n## Behavioural fingerprint (Spearman across agents, 95% agent-bootstrap CI)\n")
    rates = agent_rates(run)
    fp = fingerprint(run, rates=rates)
    measures = list(dict.fromkeys(r["measure"] for r in fp))
    by = {(r["measure"], r["trait"]): r for r in fp}
    print(f"rates: {rates.schema.metadata[b'rates'].decode()}, {rates.num_rows} agents\n")
    print("| measure | " + " | ".join(TRAITS) + " |")
    print("|---" * (len(TRAITS) + 1) + "|")
    for m in measures:
        cells = []
        for t in TRAITS:
            r = by[(m, t)]
            cells.append("-" if r["rho"] is None else
                         (f"**{_ci(r)}**" if r["ci_low"] > 0 or r["ci_high"] < 0 else _ci(r)))
        print(f"| {m} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
