"""Distillation prompts built on this machine: mixed kinds, deterministic, never an eval prompt."""

from __future__ import annotations

import json
from collections import Counter

from trimode.eval import prompts as bundled
from trimode.train import recipe_prompts

SOURCE = '''
def add_numbers(a, b):
    """Return the sum of a and b."""
    total = a + b
    return total


def has_close_elements(numbers, threshold):
    """Named like a HumanEval entry point: must be skipped."""
    x = 1
    return x


def _private(x):
    """Private helpers are skipped."""
    y = x
    return y
'''


def test_prompts_mix_kinds_skip_eval_names_and_are_deterministic(tmp_path):
    (tmp_path / "mod.py").write_text(SOURCE)
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "test_mod.py").write_text(SOURCE.replace("add_numbers", "in_tests"))
    a = recipe_prompts.build(200, seed=1, root=tmp_path)
    assert a == recipe_prompts.build(200, seed=1, root=tmp_path)
    kinds = Counter(p["kind"] for p in a)
    assert {"code", "explain", "math", "chat"} <= set(kinds)
    sources = {p["source"] for p in a}
    assert "stdlib:mod.py:add_numbers" in sources
    assert not any("has_close_elements" in s or "_private" in s or "in_tests" in s for s in sources)
    eval_texts = {item.messages()[0]["content"] for item in bundled.load_all("eval")}
    assert not eval_texts & {p["prompt"] for p in a}
    train_texts = {item.messages()[0]["content"] for item in bundled.load_all("train")}
    assert train_texts <= {p["prompt"] for p in a}


def test_cli_writes_jsonl_that_distill_data_reads(tmp_path):
    from trimode.cli import main
    from trimode.train.distill import read_prompts

    out = tmp_path / "prompts.jsonl"
    assert main(["make-prompts", "--output", str(out), "--count", "120"]) == 0  # in process: no interpreter to start
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 120 and all(r["prompt"] for r in rows)
    assert len(read_prompts(out, chat=True)) == 120


def test_prose_prompts_are_distinct_deterministic_and_avoid_eval_subjects():
    a = recipe_prompts.build(2000, seed=3, kind="prose")
    assert a == recipe_prompts.build(2000, seed=3, kind="prose")
    assert len(a) == 2000 and len({p["prompt"] for p in a}) == 2000
    assert {p["kind"] for p in a} == {"prose"}
    # The subjects of the bundled eval chat prompts stay out of the training prose.
    for word in ("autumn", "lighthouse", "tea", "ice", "compiler", "ram", "api", "rainy", "invitation"):
        assert not any(word in p["prompt"].lower().replace(".", " ").replace("?", " ").split() for p in a), word


def test_leak_check_names_the_source_of_an_eval_prompt():
    import pytest

    item = bundled.load("chat", "eval")[0]
    with pytest.raises(RuntimeError, match="task:7"):
        recipe_prompts.check_no_leak([{"prompt": item.messages()[0]["content"], "source": "task:7"}])
    with pytest.raises(ValueError, match="unknown prompt kind"):
        recipe_prompts.build(10, kind="poetry")
