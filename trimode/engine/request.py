"""A request as the engine sees it, and the events it sends back to whoever submitted it."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..decoding.base import GenerationConfig, Row
from ..decoding.score import TokenScores
from ..decoding.spec import spec_for

_ids = itertools.count()


@dataclass
class Event:
    kind: str  # "tokens" | "done" | "error"
    tokens: list[int] = field(default_factory=list)  # new tokens ("tokens")
    finish_reason: str | None = None  # "done": eos | length | stop | cancelled
    usage: dict[str, Any] | None = None  # "done"
    message: str | None = None  # "error"
    scores: TokenScores | None = None  # "done", when the request asked for logprobs


@dataclass
class Request:
    """Prompt ids, the mode, and a :class:`GenerationConfig` holding this request's own settings.

    ``sink`` receives :class:`Event` objects on the engine thread; it must not block (e.g. put
    into a queue or hand over to an event loop with ``call_soon_threadsafe``).

    ``suffix``: fill in the middle (:func:`trimode.decoding.infill.infill`): the completion is
    ``config.max_new_tokens`` tokens denoised between the prompt and these ids. It runs as one piece
    of work on the engine thread between steps, not in a batch, and holds no cache row afterwards.

    ``logprobs``: None, or how many alternatives to score per position (0: the chosen token's
    alone); the "done" event then carries the verifier's :class:`TokenScores` of the completion,
    or of prompt and completion with ``echo``. ``generate=False`` scores the prompt without
    generating (``echo`` with ``max_tokens: 0``); it holds no cache row.
    """

    prompt: list[int]
    config: GenerationConfig
    mode: str
    sink: Callable[[Event], None]
    id: int = field(default_factory=lambda: next(_ids))
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted: float = field(default_factory=time.perf_counter)
    admitted_at: float | None = None  # joined a batch (or was scored, when it generates nothing)
    first_token_at: float | None = None
    row: Row | None = None
    sent: int = 0  # tokens already sent to the sink
    logprobs: int | None = None
    echo: bool = False
    generate: bool = True
    suffix: list[int] | None = None
    isolated: bool = False  # runs in a batch of its own (its shared batch failed)
    replay: list[int] | None = None  # tokens sent before that failure, which the rerun must reproduce
    cancel_step: int | None = None  # the engine's step count when it was cancelled

    @property
    def step_tokens(self) -> int:
        """Tokens this request adds to one forward of its batch's steps at most."""
        return spec_for(self.mode, engine=True).step_tokens(self.config.block_size)

    @property
    def reservation(self) -> int:
        """Cache tokens this request may occupy: prompt, budget, and the slots a step writes
        beyond the kept tokens (one block of drafts/masks; the whole B x (B+1) grid for
        quadratic self-speculation)."""
        if not self.generate or self.suffix is not None:
            return 0
        scratch = spec_for(self.mode, engine=True).scratch(self.config.block_size)
        return len(self.prompt) + self.config.max_new_tokens + scratch + 1

    def usage(self) -> dict[str, Any]:
        row = self.row
        completion = len(row.tokens) if row else 0
        nfe = row.nfe if row else 0
        out: dict[str, Any] = {
            "prompt_tokens": len(self.prompt),
            "completion_tokens": completion,
            "total_tokens": len(self.prompt) + completion,
            "nfe": nfe,
            "tokens_per_forward": round(completion / nfe, 4) if nfe else 0.0,
            "forwards": dict(row.forwards) if row else {},
        }
        if row and row.accepted_lengths:
            out["mean_accepted_length"] = round(sum(row.accepted_lengths) / len(row.accepted_lengths), 3)
        return out
