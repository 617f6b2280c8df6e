"""Every mode against AR, prompt by prompt at batch 1: the runner behind ``trimode demo``,
``trimode bench modes`` and ``trimode bench draft-curve``.

A :class:`ModeRun` sums one mode's generated tokens, forwards and seconds over the prompts (each
prompt's time is the median of ``repeats`` runs; greedy runs differ only in their timings), and
keeps its outputs, so :func:`versus_ar` can say whether a mode emitted AR's tokens and how its
speed compares. One untimed warm-up call per mode runs first. Counting, as everywhere in trimode:
generated tokens exclude the prompt and include EOS; forwards count every model call, the prefill
included.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..decoding import GenerationConfig, decoder_for
from ..decoding.base import TokenCallback


@dataclass
class ModeRun:
    mode: str
    block: int | None  # None for AR
    tokens: int = 0
    forwards: int = 0
    seconds: float = 0.0
    sequences: list[list[int]] = field(default_factory=list)
    accepted: list[int] = field(default_factory=list)  # self-speculation: tokens per cycle

    @property
    def tokens_per_forward(self) -> float:
        return self.tokens / self.forwards if self.forwards else 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    @property
    def mean_accepted(self) -> float | None:
        return sum(self.accepted) / len(self.accepted) if self.accepted else None


def run_mode(
    model,
    mode: str,
    prompts: Sequence[Sequence[int]],
    config: GenerationConfig,
    *,
    repeats: int = 1,
    stream: Callable[[int], TokenCallback | None] | None = None,
) -> ModeRun:
    """``mode`` over ``prompts`` one at a time; ``stream(i)`` may give prompt i's token callback
    (used on the first of its runs; the time spent in it is not counted)."""
    decoder = decoder_for(mode, model)
    decoder.generate([list(prompts[0])], GenerationConfig(max_new_tokens=4, block_size=config.block_size))  # warm-up
    run = ModeRun(mode, None if mode == "ar" else config.block_size)
    for i, prompt in enumerate(prompts):
        first = decoder.generate([list(prompt)], config, on_tokens=stream(i) if stream else None)
        results = [first] + [decoder.generate([list(prompt)], config) for _ in range(repeats - 1)]
        run.seconds += statistics.median(r.stats.elapsed_s for r in results)
        run.tokens += first.stats.generated_tokens
        run.forwards += first.stats.nfe
        run.sequences.append(first.sequences[0])
        if first.stats.accepted_lengths:
            run.accepted += first.stats.accepted_lengths[0]
    return run


def repetition(sequences: Sequence[Sequence[int]], n: int = 3) -> float:
    """The share of token n-grams that already occurred earlier in the same output, pooled over
    outputs: a degeneracy measure for the modes whose text is not AR's ("process process the is
    process ..." scores high; AR's own text on the demo prompts scores a few hundredths to ~0.1)."""
    seen_total = repeated = 0
    for seq in sequences:
        seen: set[tuple[int, ...]] = set()
        for i in range(len(seq) - n + 1):
            gram = tuple(seq[i : i + n])
            repeated += gram in seen
            seen.add(gram)
            seen_total += 1
    return repeated / seen_total if seen_total else 0.0


def versus_ar(runs: Sequence[ModeRun]) -> list[dict[str, Any]]:
    """One row per run: its figures, its speed over AR's, whether it emitted AR's tokens (None
    without an AR run) and its :func:`repetition`."""
    ar = next((r for r in runs if r.mode == "ar"), None)
    return [{
        "mode": r.mode,
        "block": r.block,
        "tokens": r.tokens,
        "forwards": r.forwards,
        "tokens_per_forward": round(r.tokens_per_forward, 3),
        "tokens_per_second": round(r.tokens_per_second, 2),
        "speedup_vs_ar": round(r.tokens_per_second / ar.tokens_per_second, 3) if ar and ar.tokens_per_second else None,
        "equals_ar": (r.sequences == ar.sequences) if ar else None,
        "mean_accepted": None if r.mean_accepted is None else round(r.mean_accepted, 3),
        "repeated_3grams": round(repetition(r.sequences), 3),
    } for r in runs]
