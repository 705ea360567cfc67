"""The batched rest-prefill feeds put each row's keys where GroupQueryAttention does."""

from __future__ import annotations

import numpy as np

from steertown.inference.onnx_rest_graph import rest_feeds


def test_rows_keep_their_own_positions_cache_layout_and_causal_mask():
    f = rest_feeds([2, 4], [3, 1], max_position=100, group=2)
    # Positions continue each row's prefix.
    assert f["position_ids"].tolist() == [[2, 3, 4], [4, 5, 6]]
    # Concatenated axis: past (width 4) then new (width 3). Row 0: its 2 prefix slots,
    # then its 3 new tokens (4, 5, 6); row 1: 4 prefix slots, then its new token (4).
    index = f["kv_index"][:, :, 0]
    assert index[0, :5].tolist() == [0, 1, 4, 5, 6]
    assert index[1, :5].tolist() == [0, 1, 2, 3, 4]
    bias = f["attn_bias"]
    assert bias.shape == (2, 1, 2 * 3, 7)  # group x rest rows, P + S keys
    allowed = np.isfinite(bias[:, 0, :3])  # first query head of each group
    # Row 0's first new token sees its prefix and itself, the last sees 5 slots.
    assert allowed[0, 0].tolist() == [True, True, True, False, False, False, False]
    assert allowed[0, 2].sum() == 5 and allowed[1, 0].sum() == 5
    assert np.array_equal(bias[:, :, :3], bias[:, :, 3:])  # same mask for every head
