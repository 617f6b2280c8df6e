"""HumanEval single-line infilling: the tasks rebuild every canonical solution, a right line passes
and a wrong one fails, the newline sits in the middle, and each method's line extraction."""

from __future__ import annotations

import pytest

from trimode.eval import infilling


def test_every_non_blank_solution_line_is_a_task_and_the_true_line_passes():
    assert len(infilling.tasks()) == 1033  # the size of HumanEval-SingleLineInfilling
    items = infilling.tasks(limit=2)
    first = [t for t in items if t.problem["task_id"] == "HumanEval/0"]
    for t in first:
        assert infilling.program(t, t.line) == t.problem["canonical_solution"]
        # The model reads the newline before the blank as part of the middle: prefix + "\n" + line + suffix.
        assert t.problem["prompt"] + infilling.program(t, t.line) == t.prefix + "\n" + t.line + t.suffix
    assert infilling.grade(first, [t.line for t in first]) == [True] * len(first)
    wrong = [t for t in first if "return" in t.line]
    assert infilling.grade(wrong, ["    return None" for _ in wrong]) == [False] * len(wrong)


def test_line_extraction_per_method():
    assert infilling.first_line("\n\n    x = 1\n    y") == "    x = 1"
    assert infilling.first_line("\n  \n") == ""
    task = next(t for t in infilling.tasks(limit=1) if t.line.strip() == "if idx != idx2:")
    echoed = f"```python\n{task.problem['prompt']}{task.before}{task.line}\n{task.after}```"
    assert infilling.fim_line(echoed, task) == task.line  # the repeated lines are skipped
    loop = next(t for t in infilling.tasks(limit=1) if t.line.strip().startswith("for idx2"))
    assert infilling.fim_line("```\nfor idx2, elem2 in enumerate(numbers):\n```", loop) == loop.line  # indented as the block


def test_line_done_waits_for_a_non_blank_line(tmp_path):
    from conftest import tiny_text_checkpoint

    from trimode.model import load

    tok = load(tiny_text_checkpoint(tmp_path)).tokenizer
    done = infilling.LineDone(tok)
    assert not done(tok.encode("\n    ", add_special_tokens=False))
    assert not done(tok.encode("\n\n    x = 1", add_special_tokens=False))
    assert done(tok.encode("\n    x = 1\n", add_special_tokens=False))


def test_a_bad_budget_is_refused():
    assert infilling.budget_arg("oracle") == "oracle" and infilling.budget_arg("12") == 12
    for bad in ("0", "-3", "some"):
        with pytest.raises(ValueError, match="--budget"):
            infilling.budget_arg(bad)
