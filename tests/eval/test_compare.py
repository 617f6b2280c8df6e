"""The every-mode-vs-AR runner's figures: the repetition measure that flags degenerate text."""

from __future__ import annotations

import pytest

from trimode.eval.compare import ModeRun, repetition, versus_ar


def test_repetition_counts_ngrams_seen_earlier_in_the_same_output():
    assert repetition([[1, 2, 3, 4, 5, 6]]) == 0.0
    # 1 2 1 2 1 2: 3-grams (1,2,1) (2,1,2) (1,2,1) (2,1,2) -> the last two repeat
    assert repetition([[1, 2, 1, 2, 1, 2]]) == pytest.approx(0.5)
    assert repetition([[7] * 10]) == pytest.approx(7 / 8)
    # outputs are separate texts: an n-gram shared by two outputs is not a repetition
    assert repetition([[1, 2, 3], [1, 2, 3]]) == 0.0
    assert repetition([[1, 2], []]) == 0.0  # too short to hold a 3-gram


def test_versus_ar_reports_repetition_per_mode():
    ar = ModeRun("ar", None, tokens=6, forwards=6, seconds=1.0, sequences=[[1, 2, 3, 4, 5, 6]])
    diff = ModeRun("diffusion", 8, tokens=6, forwards=3, seconds=1.0, sequences=[[9, 9, 9, 9, 9, 9]])
    rows = {r["mode"]: r for r in versus_ar([ar, diff])}
    assert rows["ar"]["repeated_3grams"] == 0.0 and rows["diffusion"]["repeated_3grams"] == 0.75
    assert rows["diffusion"]["equals_ar"] is False
