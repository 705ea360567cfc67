"""Mean prompt tokens per block of ticks and message kind of a run (docs/verification.md,
the 200-tick verify cost). Usage: python scripts/prompt_lengths.py storage/dumps/<run_id>
[TICKS_PER_BLOCK, default 5]"""

from __future__ import annotations

import sys
from pathlib import Path

import duckdb

run = Path(sys.argv[1])
every = int(sys.argv[2]) if len(sys.argv) > 2 else 5
print(duckdb.sql(
    f"SELECT tick // {every} * {every} AS from_tick, kind, "
    "round(avg(tokens_in)) AS mean_prompt_tokens, count(*) AS messages "
    f"FROM read_parquet('{run / 'messages' / '*.parquet'}') "
    "GROUP BY ALL ORDER BY kind, from_tick"))
