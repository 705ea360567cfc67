"""Mean prompt tokens per 5 ticks and message kind of a run (docs/verification.md, the
200-tick verify estimate). Usage: python scripts/prompt_lengths.py storage/dumps/<run_id>"""

from __future__ import annotations

import sys
from pathlib import Path

import duckdb

run = Path(sys.argv[1])
print(duckdb.sql(
    "SELECT tick // 5 * 5 AS from_tick, kind, round(avg(tokens_in)) AS mean_prompt_tokens, "
    f"count(*) AS messages FROM read_parquet('{run / 'messages' / '*.parquet'}') "
    "GROUP BY ALL ORDER BY kind, from_tick"))
