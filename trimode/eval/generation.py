"""Batched generation over a prompt list in one mode and setting, shared by the evaluations and the
benchmark suite.

A :class:`Setting` is one point of the inference-budget grid: a mode plus its knobs (block size,
confidence threshold). :func:`generate_all` runs a list of prompts through it in batches (prompts
sorted by length, so a batch wastes little padding; results come back in the input order) and
keeps each batch's :class:`~trimode.decoding.base.DecodeStats`, because forwards are only known per
batch (a forward over a batch counts once, see :mod:`trimode.decoding.base`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from ..decoding import GenerationConfig, spec_for
from ..decoding import thresholds as default_thresholds
from ..decoding.base import DecodeStats, StopCondition


@dataclass(frozen=True)
class Setting:
    mode: str
    block_size: int | None = None  # diffusion / speculation block; None for AR
    threshold: float | None = None  # diffusion commit threshold, linear-spec draft threshold

    def __post_init__(self) -> None:
        spec_for(self.mode)  # a clear error for an unknown mode

    @classmethod
    def default(cls, mode: str, block_size: int | None = None, threshold: float | None = None,
                device: str = "cpu") -> Setting:
        """The mode at ``block_size`` (default: its block for ``device``) and, for a mode that reads a
        threshold, ``threshold`` (default: that knob's default)."""
        spec = spec_for(mode)
        if mode == "ar":
            return cls("ar")
        block = spec.block(block_size, device)
        if spec.threshold_knob is None:
            return cls(mode, block)
        return cls(mode, block, default_thresholds()[spec.threshold_knob] if threshold is None else threshold)

    @property
    def label(self) -> str:
        parts = [self.mode]
        if self.block_size is not None:
            parts.append(f"B{self.block_size}")
        if self.threshold is not None:
            parts.append(f"t{self.threshold:g}")
        return "/".join(parts)

    def config(self, max_new_tokens: int, eos_token_ids: Sequence[int], stop=None) -> GenerationConfig:
        knobs: dict[str, Any] = {}
        if self.block_size is not None:
            knobs["block_size"] = self.block_size
        knob = spec_for(self.mode).threshold_knob
        if knob is not None:
            knobs[knob] = self.threshold
        return GenerationConfig(max_new_tokens=max_new_tokens, eos_token_ids=tuple(eos_token_ids), stop=stop, **knobs)

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "block_size": self.block_size, "threshold": self.threshold, "label": self.label}


def sweep(modes: Sequence[str], block_sizes: Sequence[int] = (), thresholds: Sequence[float] = (),
          linear_blocks: Sequence[int] = (), quadratic_blocks: Sequence[int] = (), device: str = "cpu") -> list[Setting]:
    """Settings for each mode: ``block_sizes`` x ``thresholds`` for diffusion, ``linear_blocks`` for
    linear-spec (draft threshold 0: one draft forward), ``quadratic_blocks`` for quadratic-spec; an
    empty list means the mode's default (its block for ``device``)."""
    out: list[Setting] = []
    for mode in modes:
        if mode == "ar":
            out.append(Setting("ar"))
        elif mode == "diffusion":
            out += [Setting.default(mode, b, t, device) for b in (block_sizes or [None]) for t in (thresholds or [None])]
        elif mode == "linear-spec":
            out += [Setting.default(mode, b, device=device) for b in (linear_blocks or [None])]
        else:
            out += [Setting.default(mode, b, device=device) for b in (quadratic_blocks or [None])]
    return out


@dataclass
class Output:
    ids: list[int]
    text: str | None
    finish: str
    batch: int  # index into Run.batches


@dataclass
class Run:
    setting: Setting
    batch_size: int
    outputs: list[Output] = field(default_factory=list)
    batches: list[DecodeStats] = field(default_factory=list)

    @property
    def totals(self) -> DecodeStats:
        """The batches' counts summed (forwards, tokens, wall time); its ratios are the run's."""
        total = DecodeStats(mode=self.setting.mode)
        for s in self.batches:
            total.forwards.update(s.forwards)
            total.generated_tokens += s.generated_tokens
            total.tokens_per_row += s.tokens_per_row
            total.elapsed_s += s.elapsed_s
            total.prefill_s += s.prefill_s
        return total

    def accepted_lengths(self) -> list[int]:
        """Tokens gained per forward after the prefill: accepted drafts plus bonus per speculation
        cycle; slots committed per denoising step (diffusion); 1 per forward for AR."""
        out: list[int] = []
        for s in self.batches:
            if s.accepted_lengths:
                out += [a for row in s.accepted_lengths for a in row]
            elif s.block_commits:
                out += [c for row in s.block_commits for block in row for c in block]
            elif s.mode == "ar":
                out += [1] * sum(max(n - 1, 0) for n in s.tokens_per_row)
        return out

    def histogram(self) -> dict[int, int]:
        return dict(sorted(Counter(self.accepted_lengths()).items()))


def generate_all(decoder, setting: Setting, prompts: Sequence[Sequence[int]], *, max_new_tokens: int,
                 eos_token_ids: Sequence[int], batch_size: int = 1, tokenizer=None,
                 stop: StopCondition | None = None, progress: str | None = None) -> Run:
    """Generate for every prompt; ``progress`` is the tqdm label (None: no bar). A ``stop`` with a
    ``trim`` method (:class:`~trimode.decoding.stop.StopStrings`) also trims the decoded texts."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    trim = getattr(stop, "trim", None)
    config = setting.config(max_new_tokens, eos_token_ids, stop)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    run = Run(setting, batch_size)
    slots: list[Output | None] = [None] * len(prompts)
    bar = tqdm(total=len(prompts), desc=progress, unit="prompt", disable=progress is None, leave=False)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        result = decoder.generate([prompts[i] for i in chunk], config)
        run.batches.append(result.stats)
        for row, i in enumerate(chunk):
            ids = result.sequences[row]
            text = None
            if tokenizer is not None:
                text = tokenizer.decode(ids, skip_special_tokens=True)
                text = trim(text) if trim else text
            slots[i] = Output(ids, text, result.finish_reasons[row], len(run.batches) - 1)
        bar.update(len(chunk))
    bar.close()
    run.outputs = [o for o in slots if o is not None]
    return run
