"""Benchmark results: the table, the machine facts, and RESULTS.md's measured blocks."""

from __future__ import annotations

import datetime as dt
import os
import platform
from pathlib import Path
from typing import Any

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


class Table:
    """Rows of (section, name, seconds, ratio, note); printed and written as markdown."""

    COLUMNS = ("section", "measurement", "seconds", "ratio", "note")

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, section: str, name: str, seconds: float | None, ratio: float | None = None,
            note: str = "") -> None:
        row = {"section": section, "measurement": name,
               "seconds": None if seconds is None else round(seconds, 3),
               "ratio": None if ratio is None else round(ratio, 2), "note": note}
        self.rows.append(row)
        print(f"  {section:<10} {name:<46} "
              f"{'' if seconds is None else f'{seconds:9.2f}s'} "
              f"{'' if ratio is None else f'x{ratio:6.2f}'}  {note}", flush=True)

    def markdown(self) -> str:
        out = ["| " + " | ".join(self.COLUMNS) + " |", "|" + "---|" * len(self.COLUMNS)]
        for r in self.rows:
            cells = [r["section"], r["measurement"],
                     "" if r["seconds"] is None else f"{r['seconds']:.2f}",
                     "" if r["ratio"] is None else f"{r['ratio']:.2f}x", r["note"]]
            out.append("| " + " | ".join(cells) + " |")
        return "\n".join(out)


def machine() -> dict[str, str]:
    import importlib.metadata as md

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    out = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "cpu": cpu,
           "nproc": str(os.cpu_count()), "load_avg_1_5_15": " ".join(
               f"{x:.1f}" for x in os.getloadavg()), "python": platform.python_version()}
    for pkg in ("torch", "transformers", "sentence-transformers", "onnxruntime"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    try:
        import torch

        out["torch_threads"] = str(torch.get_num_threads())
    except ImportError:
        pass
    return out


def write_results(path: Path, out: dict[str, Any]) -> None:
    """Replace the measured block of RESULTS.md (text outside the markers is kept)."""
    info = out["machine"]
    block = "\n".join([
        BEGIN,
        f"Last `bench/run.py` ({out['mode']}) run: {info['date']}",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items() if k != "date"),
        "",
        f"Batched outputs equal sequential outputs: **{out['batched_equals_sequential']}**",
        "",
        out["markdown"],
        END])
    replace_block(path, BEGIN, END, block)


def write_block(path: Path, key: str, title: str, info: dict[str, str], body: str) -> None:
    """Replace (or append) the block between `<!-- key:begin -->` and `<!-- key:end -->`."""
    begin, end = f"<!-- {key}:begin -->", f"<!-- {key}:end -->"
    flags = cpu_flags()
    block = "\n".join([begin, f"### {title}", "", f"Run {info['date']}; the machine was shared "
                       f"with other jobs (load average {info['load_avg_1_5_15']} at the end): "
                       "absolute seconds are taken under load, read the ratios.", "",
                       "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items() if k != "date"),
                       "", f"CPU flags (SIMD/bf16): {flags}", "", body, end])
    replace_block(path, begin, end, block)


def replace_block(path: Path, begin: str, end: str, block: str) -> None:
    """Put `block` (which starts with `begin` and ends with `end`) in place of the file's
    block between those markers, or append it."""
    text = path.read_text() if path.exists() else "# Benchmark results\n\n"
    if begin in text and end in text:
        text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def cpu_flags() -> str:
    """The CPU's vector and bf16 features that decide dtype and runtime speed."""
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
              "amx_bf16", "amx_int8")
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return " ".join(f for f in wanted if f in have) or "none of " + " ".join(wanted)
    except OSError:
        pass
    return "unknown"


