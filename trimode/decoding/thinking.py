"""Thinking budget: force the end-of-thinking token after N thinking tokens, in every mode.

It is a :data:`~trimode.decoding.base.ForceRule`: decoders offer their tokens to
:class:`~trimode.decoding.base.Rows`, which substitutes the forced token at the budget position
and voids whatever the decoder had decided after it (drafts, the rest of a diffusion block), so
the rule holds identically in AR, diffusion and both self-speculation modes.

A row is thinking from the start when its prompt ends inside a thinking section (the last
``<think>`` of the prompt is not closed, as chat templates leave it with ``enable_thinking``), or
from the moment it generates the start token. Thinking ends at the end token; with the budget
spent, the end token is forced next.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..tokenizer import Tokenizer


class ThinkingBudget:
    def __init__(self, budget: int, end_id: int, start_id: int | None, open_at_start: Sequence[bool]) -> None:
        if budget < 0:
            raise ValueError(f"thinking budget must be >= 0, got {budget}")
        self.budget, self.end_id, self.start_id = budget, end_id, start_id
        self.open_at_start = list(open_at_start)

    @classmethod
    def for_prompts(
        cls, prompts: Sequence[Sequence[int]], budget: int, end_id: int, start_id: int | None
    ) -> "ThinkingBudget":
        open_rows = []
        for p in prompts:
            last_start = max((i for i, t in enumerate(p) if t == start_id), default=-1) if start_id is not None else -1
            last_end = max((i for i, t in enumerate(p) if t == end_id), default=-1)
            open_rows.append(last_start > last_end)
        return cls(budget, end_id, start_id, open_rows)

    @classmethod
    def from_tokenizer(
        cls, tokenizer: Tokenizer, prompts: Sequence[Sequence[int]], budget: int,
        start: str = "<think>", end: str = "</think>",
    ) -> "ThinkingBudget":
        end_id = tokenizer.backend.token_to_id(end)
        if end_id is None:
            raise ValueError(f"a thinking budget needs the end-of-thinking token {end!r}, which this tokenizer lacks")
        return cls.for_prompts(prompts, budget, end_id, tokenizer.backend.token_to_id(start))

    def __call__(self, row: int, tokens: Sequence[int]) -> int | None:
        if self.open_at_start[row]:
            begin = 0
        elif self.start_id is not None and self.start_id in tokens:
            begin = list(tokens).index(self.start_id) + 1
        else:
            return None
        thinking = tokens[begin:]
        if self.end_id in thinking:
            return None
        return self.end_id if len(thinking) >= self.budget else None
