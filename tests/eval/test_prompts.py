"""Bundled prompt sets: sizes, the train/eval split, and that code items' tests grade answers."""

from __future__ import annotations

import pytest

from trimode.eval import prompts


def test_split_sizes_and_kinds():
    train, evals = prompts.load_all("train"), prompts.load_all("eval")
    assert len(train) >= 60 and len(evals) >= 30
    for name in prompts.BUNDLED:
        assert prompts.load(name, "train") and prompts.load(name, "eval"), name
        assert {it.kind for it in prompts.load(name, "eval")} == {name}


def test_eval_split_is_disjoint_from_train():
    train, evals = prompts.load_all("train"), prompts.load_all("eval")
    assert not {it.id for it in train} & {it.id for it in evals}
    assert not {it.prompt.strip().lower() for it in train} & {it.prompt.strip().lower() for it in evals}
    ids = [it.id for it in train + evals]
    assert len(ids) == len(set(ids))
    # code items: no function is asked for in both splits
    entry = lambda split: {it.check["entry_point"] for it in prompts.load("code", split)}
    assert not entry("train") & entry("eval")


def test_humaneval_is_eval_only():
    items = prompts.load("humaneval", "eval")
    assert len(items) == 164 and items[0].id == "HumanEval/0"
    with pytest.raises(ValueError, match="only an eval split"):
        prompts.load("humaneval", "train")


def test_bad_names_are_named():
    with pytest.raises(ValueError, match="unknown split 'test'"):
        prompts.load("code", "test")
    with pytest.raises(ValueError, match="unknown prompt set 'poems'"):
        prompts.load("poems", "eval")


def test_grade_code_runs_the_items_tests():
    item = next(it for it in prompts.load("code", "eval") if it.id == "code/rotate_left")
    right = "```python\ndef rotate_left(items, k):\n    if not items:\n        return []\n    k %= len(items)\n" \
            "    return items[k:] + items[:k]\n```"
    wrong = "```python\ndef rotate_left(items, k):\n    return items[k:] + items[:k]\n```"  # fails k > len
    assert prompts.grade(item, right) is True
    assert prompts.grade(item, wrong) is False


def test_grade_math_and_chat():
    item = prompts.load("math", "eval")[0]
    assert prompts.grade(item, f"Some steps.\nThe answer is {item.answer}.") is True
    assert prompts.grade(item, "The answer is 7.") is False
    assert prompts.grade(prompts.load("chat", "eval")[0], "anything") is None


def test_math_prompt_carries_the_answer_instruction():
    item = prompts.load("math", "train")[0]
    assert item.messages()[0]["content"].endswith(prompts.MATH_INSTRUCTION)
