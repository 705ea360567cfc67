"""Mean prompt tokens per block of ticks and message kind of a run (docs/verification.md,
the 200-tick verify cost). Usage: python scripts/prompt_lengths.py storage/dumps/<run_id>
[TICKS_PER_BLOCK, default 5]"""

from __future__ import annotations

import sys

from steertown.storage.run_dir import RunDir

con = RunDir(sys.argv[1]).connect(["messages"])
every = int(sys.argv[2]) if len(sys.argv) > 2 else 5
print(con.sql(
    f"SELECT tick // {every} * {every} AS from_tick, kind, "
    "round(avg(tokens_in)) AS mean_prompt_tokens, count(*) AS messages "
    "FROM messages GROUP BY ALL ORDER BY kind, from_tick"))
