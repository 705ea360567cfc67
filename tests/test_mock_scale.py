"""A large town on the mock backend runs end to end with its state bounded and its report
rendered (the small version of `bench/run.py --mock-scale`: 10,000 agents x 100 ticks)."""

from __future__ import annotations

import pyarrow.parquet as pq

from bench.mock_scale import mock_town


def test_a_large_mock_town_keeps_memory_flat_and_renders_its_report(tmp_path):
    r = mock_town(population=2000, ticks=20, tmp=tmp_path, every=5)
    run = tmp_path / "dumps" / "mock-scale"
    ticks = [row for f in sorted((run / "ticks").glob("*.parquet"))
             for row in pq.read_table(f).to_pylist()]
    assert len(ticks) == 20 and r["events"] == sum(t["events"] for t in ticks) > 0
    page = (tmp_path / "reports" / "mock-scale" / "index.html").read_text()
    assert ">2,000<" in page  # the agents card
    # Flat: what the process holds after the last chunk is about what it held after the
    # first (state is capped per agent; rows go to disk each tick). Growth per chunk of
    # the late half must stay well under the early growth (warm-up: caches, imports).
    rss = r["rss_mb"]  # before, then after each of the 4 chunks
    late = rss[-1] - rss[2]
    assert late < 40, f"RSS grew {late:.0f} MB over the last two chunks: {rss}"
