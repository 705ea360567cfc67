"""`--reproduce` compares rows exactly and analysis floats to a stated tolerance."""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flows.study_reproduce import ANALYSIS_REL_TOL, _same  # noqa: E402


def test_summation_order_noise_is_the_same_result():
    # the town-v1 re-run's fingerprint Spearman: same rows, another bootstrap summation order
    assert _same(0.15158194036557224, 0.1515819403655722)
    assert _same(0.0, 1e-17) and _same(None, None) and _same(math.nan, math.nan)


def test_any_real_change_is_a_difference():
    slope = 0.3861
    assert not _same(slope, slope + 1e-9)  # the slow test's altered slopes.csv value
    assert not _same(slope, slope * (1 + 100 * ANALYSIS_REL_TOL))
    assert not _same(12, 13) and not _same(0.0, 1e-9)
    assert not _same(None, 0.0) and not _same(math.nan, 0.0) and not _same(0.1, math.nan)
