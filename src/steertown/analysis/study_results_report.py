"""A study's results files, all written by code from `study_results.study_numbers`:
`results.md` (the answer in words, from the numbers), `effects.csv`, `slopes.csv`,
`society.csv`, `society_paired.csv`, `verification.csv`, `forest.png`, `society.png` and
`index.html` (offline)."""

from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path
from typing import Any

import altair as alt

from steertown.analysis import study_results as sr
from steertown.analysis.study_stats import detectable_d
from steertown.storage.run_dir import atomic_write_bytes

EFFECT_COLUMNS = ("arm", "contrast", "family", "trait", "measure", "mean", "ci_low",
                  "ci_high", "p", "p_holm", "n", "seeds", "sd", "d")
SLOPE_COLUMNS = ("run_id", "arm", "seed", "mode", "trait", "measure", "slope")
VERIFICATION_COLUMNS = ("run_id", "seed", "mode", "verdict", "tv", "tv_ci_low", "tv_ci_high",
                        "tv_random", "traits_passed", "traits_checked", "failed")


def csv_bytes(rows: list[dict], columns: tuple[str, ...] | list[str]) -> bytes:
    """CSV with these columns (floats at full precision: the record `--reproduce` checks)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows([{k: ("" if r.get(k) is None else r.get(k)) for k in columns} for r in rows])
    return buf.getvalue().encode()


def _f(v: Any, fmt: str = "+.3f") -> str:
    return "n/a" if v is None else format(v, fmt)


def _ci(r: dict) -> str:
    return "n/a" if r["ci_low"] is None else f"[{_f(r['ci_low'])}, {_f(r['ci_high'])}]"


def _p(v: Any) -> str:
    return "n/a" if v is None else (f"{v:.3f}" if v >= 0.001 else f"{v:.1e}")


def _effect_phrase(r: dict) -> str:
    return (f"{r['trait']} ({r['measure']}: {_f(r['mean'])}, 95% CI {_ci(r)}, "
            f"Holm p {_p(r['p_holm'])}, {r['n']} seeds)")


def _contrast_sentence(rows: list[dict], a: str, b: str, declared: bool,
                       planned: set[str]) -> str:
    """One sentence from a family's five rows: how many traits each way, the rest."""
    if not rows:
        if {a, b} <= planned:
            return f"{a} vs {b}: no seed has both cells complete yet."
        return f"{a} vs {b}: not in this study (a mode is missing)."
    ups = [r for r in rows if sr.result_word(r) == f"{a} > {b}"]
    downs = [r for r in rows if sr.result_word(r) == f"{a} < {b}"]
    nulls = [r for r in rows if sr.result_word(r) == "not detected"]
    head = (f"**{a} > {b} for {len(ups)} of {len(rows)} traits**" if declared
            else f"(partial, not declared) {a} > {b} for {len(ups)} of {len(rows)} traits")
    parts = [head + " on the primary outcome (Holm-adjusted p < "
             f"{sr.ALPHA}, mean contrast > 0)" + (": " + "; ".join(map(_effect_phrase, ups))
                                                    if ups else "")]
    if downs:
        parts.append(f"{a} < {b} (contrary to the hypothesis) for " + "; ".join(map(_effect_phrase, downs)))
    if nulls:
        parts.append("Not detected for " + "; ".join(map(_effect_phrase, nulls)))
    return ". ".join(parts) + "."


def _effects_table(rows: list[dict]) -> list[str]:
    out = ["| contrast | trait | outcome | mean | 95% CI | p | Holm p | seeds | result |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['contrast']} | {r['trait']} | {r['measure']} | {_f(r['mean'])} | "
                   f"{_ci(r)} | {_p(r['p'])} | {_p(r['p_holm'])} | {r['n']} | "
                   f"{sr.result_word(r)} |")
    return out


def _power_lines(rows: list[dict]) -> list[str]:
    """Per corrected test: the effect its t-test finds with 80% power at this many seeds,
    at Holm's strictest level (alpha / tests in the family) and at alpha, in the
    outcome's units (detectable d x the per-seed SD of the contrast)."""
    sizes = Counter(r["family"] for r in rows)
    ns = sorted({r["n"] for r in rows if r["n"] >= 2})
    if not ns:
        return ["No test has two seeds yet."]
    m = max(sizes.values())
    d_strict, d_loose = detectable_d(ns[-1], sr.ALPHA / m), detectable_d(ns[-1], sr.ALPHA)
    out = [f"With {ns[-1]} paired seeds, the two-sided t-test has 80% power when the mean "
           f"contrast is {d_strict:.2f} standard deviations of its per-seed values at alpha "
           f"{sr.ALPHA / m:.3g} ({sr.ALPHA} / {m} tests: Holm's first step) and {d_loose:.2f} "
           f"at alpha {sr.ALPHA} (Holm's last). In each outcome's units (x the SD over "
           "seeds), a smaller true effect is likely missed: 'not detected' is not 'no "
           "effect' below these sizes.", "",
           "| contrast | trait | outcome | mean | SD over seeds | d = mean / SD | 80% power "
           f"at alpha / {m} | at alpha | result |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        sd, n = r["sd"], r["n"]
        strict, loose = ((detectable_d(n, sr.ALPHA / sizes[r["family"]]) * sd,
                          detectable_d(n, sr.ALPHA) * sd) if sd is not None else (None, None))
        out.append(f"| {r['contrast']} | {r['trait']} | {r['measure']} | {_f(r['mean'])} | "
                   f"{_f(sd, '.3f')} | {_f(r['d'], '+.2f')} | {_f(strict, '.3f')} | "
                   f"{_f(loose, '.3f')} | {sr.result_word(r)} |")
    return out


def _verification_lines(rows: list[dict], n_cells: int) -> list[str]:
    """Per mode: verdicts, mean TV of own steering vs random, trait checks passed."""
    if not rows:
        return [f"- Verification: none of the {n_cells} cells verified yet."]
    out = [f"- Verification (`steertown verify`, default budget; {len(rows)} of {n_cells} "
           "cells verified):"]
    for mode in dict.fromkeys(r["mode"] for r in rows):
        rs = [r for r in rows if r["mode"] == mode]
        verdicts = ", ".join(f"{v} {sum(r['verdict'] == v for r in rs)}"
                             for v in dict.fromkeys(r["verdict"] for r in rs))
        tv = [r["tv"] for r in rs if r["tv"] is not None]
        rnd = [r["tv_random"] for r in rs if r["tv_random"] is not None]
        tvs = (f"; mean TV own {sum(tv) / len(tv):.3f}" if tv else "") + (
            f" vs random {sum(rnd) / len(rnd):.3f}" if rnd else "")
        checked = sum(r["traits_checked"] for r in rs)
        traits = (f"; trait checks passed {sum(r['traits_passed'] for r in rs)} of {checked}"
                  if checked else "")
        failed = sorted({n for r in rs for n in r["failed"].split()})
        out.append(f"  - {mode} ({len(rs)} cells): {verdicts}{tvs}{traits}"
                   + (f"; failed: {', '.join(failed)}" if failed else ""))
    return out


def _society_lines(numbers: dict) -> list[str]:
    paired = numbers["society_paired"]
    out = []
    for contrast in dict.fromkeys(r["contrast"] for r in paired):
        rows = [r for r in paired if r["contrast"] == contrast and r["mean"] is not None]
        diff = [r for r in rows if r["ci_low"] is not None
                and (r["ci_low"] > 0 or r["ci_high"] < 0)]
        if diff:
            out.append(f"- {contrast}: the society differed (95% CI excludes 0, uncorrected) in "
                       + "; ".join(f"{r['outcome']} {_f(r['mean'])} {_ci(r)}" for r in diff)
                       + f"; no difference detected in the other {len(rows) - len(diff)} "
                       "outcomes.")
        else:
            out.append(f"- {contrast}: no society outcome differed detectably (every 95% CI "
                       f"includes 0, or fewer than 2 seeds) across {len(rows)} outcomes.")
    return out or ["- no paired society outcomes yet (no seed has both modes of a contrast "
                   "complete, or the study lacks a control mode)."]


def results_markdown(name: str, numbers: dict, command: str, data_dir: str | None) -> str:
    """results.md: status, the answer in words, the tables; every number from `numbers`."""
    cells, effects = numbers["cells"], numbers["effects"]
    declared = numbers["complete"]
    lines = [f"# Results: {name}", "",
             f"Generated by `{command}` from the runs"
             + (f" under `{data_dir}`" if data_dir else "") + "; nothing here is typed by "
             "hand (re-run the command to regenerate). Runs' code: git "
             + (", ".join(numbers["commits"]) or "n/a") + ".", ""]
    if declared:
        lines.append(f"**Status: complete** ({numbers['n_complete']} of {len(cells)} cells).")
    else:
        lines.append(f"**Status: INCOMPLETE: {numbers['n_complete']} of {len(cells)} cells "
                     "complete. These are partial results; the primary test is not declared "
                     "until every cell is complete (preregistration).**")
    lines += ["", "## The answer", ""]
    for a, b in sr.CONTRASTS:
        fam = "primary" if (a, b) == sr.PRIMARY_CONTRAST else f"secondary: {a} - {b}"
        rows = [r for r in effects if r["family"] == fam]
        lines.append(("- Primary: " if fam == "primary" else "- Secondary: ")
                     + _contrast_sentence(rows, a, b, declared,
                                          {c["mode"] for c in cells}))
    lines += _verification_lines(numbers["verification"], len(cells))
    lines += ["", "What the society did differently (last tick; exploratory, uncorrected):", ""]
    lines += _society_lines(numbers)
    lines += ["", "## Primary and secondary tests (primary outcomes; Holm within each "
              "contrast)", "", *_effects_table([r for r in effects
                                                 if r["family"] != "exploratory"]), ""]
    lines += ["## Power at this size (primary outcomes)", "",
              *_power_lines([r for r in effects if r["family"] != "exploratory"]), ""]
    expl = [r for r in effects if r["family"] == "exploratory" and r["p"] is not None]
    low = [r for r in expl if r["p"] < sr.ALPHA]
    lines += ["## Exploratory (uncorrected; every contrast x trait x fingerprint measure)", "",
              f"{len(low)} of {len(expl)} exploratory tests have uncorrected p < {sr.ALPHA} "
              f"(about {sr.ALPHA * len(expl):.1f} expected by chance alone); all rows are in "
              "`effects.csv`.", ""]
    if low:
        lines += _effects_table(sorted(low, key=lambda r: r["p"])[:20]) + [""]
    lines += ["## Society per mode (last tick; mean over seeds, 95% CI)", "",
              "| mode | outcome | mean | 95% CI | seeds |", "|---|---|---|---|---|"]
    lines += [f"| {r['mode']} | {r['outcome']} | {_f(r['mean'], '.4g')} | {_ci(r)} | {r['n']} |"
              for r in numbers["society"]]
    lines += ["", "## Society: paired differences (exploratory)", "",
              "| contrast | outcome | mean | 95% CI | p | seeds |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['contrast']} | {r['outcome']} | {_f(r['mean'])} | {_ci(r)} | {_p(r['p'])} "
              f"| {r['n']} |" for r in numbers["society_paired"]]
    ver = {r["run_id"]: r for r in numbers["verification"]}
    lines += ["", "## Cells", "", "| run | seed | mode | status | verification | TV own "
              "[95% CI] (random) | trait checks passed | required checks failed |",
              "|---|---|---|---|---|---|---|---|"]
    for c in cells:
        v = ver.get(c["run_id"], {})
        tv = (f"{_f(v['tv'], '.3f')} [{_f(v['tv_ci_low'], '.3f')}, {_f(v['tv_ci_high'], '.3f')}]"
              f" ({_f(v.get('tv_random'), '.3f')})" if v.get("tv") is not None else "")
        traits = f"{v['traits_passed']}/{v['traits_checked']}" if v.get("traits_checked") else ""
        lines.append(f"| {c['run_id']} | {c['seed']} | {c['mode']} | "
                     f"{'complete' if c['complete'] else 'NOT complete'} | "
                     f"{c['verdict'] or 'not verified'} | {tv} | {traits} | "
                     f"{v.get('failed') or ''} |")
    lines += ["", "## Method", "",
              "Per run and trait, the OLS slope of the agents' outcome on their assigned "
              "coefficient of the trait, across the agents (`slopes.csv`). Per seed, a "
              "contrast is the difference of two modes' slopes (same agents and coefficients: "
              "paired by seed); over seeds, its mean, a 95% t-interval (seeds - 1 degrees of "
              "freedom) and a two-sided one-sample t-test. Primary family: vectors - placebo "
              "on the five primary outcomes (" + ", ".join(
                  f"{t} -> {m}" for t, m in sr.PRIMARY.items()) + f"), Holm at alpha "
              f"{sr.ALPHA}; each other contrast is a secondary family with its own Holm "
              "correction. Files: `effects.csv`, `slopes.csv`, `society.csv`, "
              "`society_paired.csv`, `verification.csv`, `forest.png`, `society.png`, `index.html`.", ""]
    return "\n".join(lines)


def forest_chart(numbers: dict) -> alt.TopLevelMixin:
    """Every contrast per trait on the primary outcomes: mean and 95% CI, one row per
    trait (own x scale: the outcomes' units differ)."""
    rows = [{"trait": f"{r['trait']} -> {r['measure']}", "contrast": r["contrast"],
             "mean": r["mean"], "low": r["ci_low"] if r["ci_low"] is not None else r["mean"],
             "high": r["ci_high"] if r["ci_high"] is not None else r["mean"],
             "p_holm": r["p_holm"], "n": r["n"]}
            for r in numbers["effects"] if r["family"] != "exploratory" and r["mean"] is not None]
    base = alt.Chart().encode(y=alt.Y("contrast:N", title=None),
                              color=alt.Color("contrast:N", title="contrast"))
    layer = alt.layer(
        alt.Chart().mark_rule(color="gray").encode(x=alt.datum(0)),
        base.mark_rule().encode(x=alt.X("low:Q", title="slope difference (mode a - mode b)"),
                                x2="high:Q"),
        base.mark_point(filled=True, size=60).encode(
            x="mean:Q", tooltip=["trait:N", "contrast:N", "mean:Q", "low:Q", "high:Q",
                                 "p_holm:Q", "n:Q"]),
        data=alt.Data(values=rows)).properties(width=420, height=90)
    return layer.facet(row=alt.Row("trait:N", title=None, sort=[
        f"{t} -> {m}" for t, m in sr.PRIMARY.items()])).resolve_scale(x="independent"
    ).properties(title="Contrasts on the primary outcomes (mean over seeds, 95% CI)")


def society_chart(numbers: dict) -> alt.TopLevelMixin:
    """Society outcomes at the last tick per mode: mean over seeds with 95% CI."""
    rows = [{**r, "low": r["ci_low"] if r["ci_low"] is not None else r["mean"],
             "high": r["ci_high"] if r["ci_high"] is not None else r["mean"]}
            for r in numbers["society"] if r["outcome"] in sr.SOCIETY_OUTCOMES
            and r["mean"] is not None]
    base = alt.Chart().encode(x=alt.X("mode:N", title=None, sort=["vectors", "placebo",
                                                                    "prompt", "off"]),
                              color=alt.Color("mode:N", legend=None))
    layer = alt.layer(base.mark_rule().encode(y=alt.Y("low:Q", title=None), y2="high:Q"),
                      base.mark_point(filled=True, size=60).encode(
                          y="mean:Q", tooltip=["mode:N", "outcome:N", "mean:Q", "low:Q",
                                               "high:Q", "n:Q"]),
                      data=alt.Data(values=rows))
    return layer.properties(width=120, height=120).facet(
        facet=alt.Facet("outcome:N", sort=list(sr.SOCIETY_OUTCOMES), title=None), columns=3
    ).resolve_scale(y="independent").properties(
        title="Society at the last tick per mode (mean over seeds, 95% CI)")


def write_results(name: str, cells: list[dict], out_dir: str | Path,
                  data_dir: str | Path | None = None,
                  command: str | None = None) -> Path:
    """Compute the study's numbers from its cells and write every results file; return
    results.md's path."""
    import vl_convert as vlc

    from steertown.analysis.charts import save_png

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    numbers = sr.study_numbers(cells)
    command = command or f"python flows/study.py studies/{name} --stage analyze"
    atomic_write_bytes(out / "effects.csv", csv_bytes(numbers["effects"], EFFECT_COLUMNS))
    atomic_write_bytes(out / "slopes.csv", csv_bytes(numbers["slopes"], SLOPE_COLUMNS))
    atomic_write_bytes(out / "verification.csv", csv_bytes(numbers["verification"],
                                                           VERIFICATION_COLUMNS))
    atomic_write_bytes(out / "society.csv", csv_bytes(
        numbers["society_runs"], ("run_id", "arm", "seed", "mode", "outcome", "value")))
    atomic_write_bytes(out / "society_paired.csv", csv_bytes(
        numbers["society_paired"], ("arm", "contrast", "outcome", "mean", "ci_low", "ci_high",
                                    "p", "n", "seeds", "family")))
    charts = {}
    if numbers["effects"]:
        charts["forest"] = forest_chart(numbers)
    if numbers["society"]:
        charts["society"] = society_chart(numbers)
    for chart_name, chart in charts.items():
        save_png(chart, out / f"{chart_name}.png")
    md = results_markdown(name, numbers, command, str(data_dir) if data_dir else None)
    atomic_write_bytes(out / "results.md", md.encode())
    atomic_write_bytes(out / "index.html", _html(name, md, charts, vlc.javascript_bundle()))
    return out / "results.md"


def _html(name: str, md: str, charts: dict, bundle: str) -> bytes:
    """An offline page: the charts (Vega bundled) and results.md as preformatted text."""
    import html
    import json

    divs = "".join(f'<div id="c-{k}"></div><p><a href="{k}.png">{k}.png</a></p>' for k in charts)
    embeds = "".join(f'vegaEmbed("#c-{k}", {json.dumps(c.to_dict())}, {{"actions": false}});'
                     for k, c in charts.items())
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>"
            f"{html.escape(name)} results</title><script>{bundle}</script></head><body>"
            f"<h1>{html.escape(name)}: results</h1>{divs}<pre style='white-space:pre-wrap'>"
            f"{html.escape(md)}</pre><script>{embeds}</script></body></html>")
    return page.encode()
