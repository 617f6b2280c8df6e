"""The decoder interface shared by every mode, and the pieces every mode reuses.

A decoder takes prompt ids and a :class:`GenerationConfig`, and returns a :class:`GenerationResult`:
the generated ids per row plus :class:`DecodeStats`.

Token accounting (the same for every mode, so figures are comparable):
* ``generated_tokens`` counts the tokens returned, prompt excluded, EOS included (a row stops at
  its first EOS, which is kept), summed over the batch rows.
* ``nfe`` counts every model forward, the prefill included; a forward over a whole batch counts once.
* ``tokens_per_forward`` = generated_tokens / nfe (at batch > 1 this is summed over rows).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch

from ..cache import KVCache
from ..model.adapters import DRAFT_ADAPTER
from ..model.transformer import Transformer
from ..sampling import SamplingParams, forbid, make_generators, select
from .spec import SPECS

# A stop condition sees a row's generated ids and says whether the row is finished.
StopCondition = Callable[[Sequence[int]], bool]
# A force rule sees (row, generated ids) and names the token that must come next, or None
# (e.g. the end-of-thinking token once a thinking budget is spent; see trimode.decoding.thinking).
ForceRule = Callable[[int, Sequence[int]], "int | None"]
# A stream callback gets (row, the ids that row just emitted).
TokenCallback = Callable[[int, list[int]], None]
ACCEPTANCE_RULES = ("speculative", "exact-match")


@dataclass(frozen=True)
class ModeSettings:
    """What every row of a batch shares because it shapes the forwards (diffusion and
    self-speculation knobs; AR ignores them). Rows with equal settings can decode together."""

    block_size: int = 32
    threshold: float | None = 0.9  # diffusion: commit slots with confidence >= threshold; None = fixed count
    draft_threshold: float | None = 0.0  # linear spec drafting; 0 = fill the whole draft in one forward
    max_steps: int | None = None  # denoising steps per block (inference budget); None = block_size
    causal_context: bool = True  # diffusion: prefill and commit passes causal (False: bidirectional)
    use_adapter: bool = True  # draft (linear spec) / denoise (diffusion, config.denoise_adapter) with the adapter

    def __post_init__(self) -> None:
        if self.block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {self.block_size}")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1] or None, got {self.threshold}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 or None, got {self.max_steps}")
        if self.draft_threshold is not None and not 0.0 <= self.draft_threshold <= 1.0:
            raise ValueError(f"draft_threshold must be in [0, 1] or None, got {self.draft_threshold}")


_SETTINGS = tuple(f.name for f in fields(ModeSettings))


@dataclass(frozen=True)
class GenerationConfig:
    """One request's parameters: its own (budget, sampling, seeds, EOS, stop, forced tokens,
    acceptance rule) and, flattened in for convenience, the batch-shaping :class:`ModeSettings`
    (:attr:`settings`)."""

    max_new_tokens: int = 128
    sampling: SamplingParams = field(default_factory=SamplingParams)
    eos_token_ids: tuple[int, ...] = ()
    stop: StopCondition | None = None
    seeds: tuple[int | None, ...] | None = None  # per-row seeds; default: sampling.seed + row
    force: ForceRule | None = None
    acceptance: str = "speculative"  # T > 0: "speculative" (lossless) or "exact-match" (reference)
    block_size: int = ModeSettings.block_size
    threshold: float | None = ModeSettings.threshold
    draft_threshold: float | None = ModeSettings.draft_threshold
    max_steps: int | None = ModeSettings.max_steps
    causal_context: bool = ModeSettings.causal_context
    use_adapter: bool = ModeSettings.use_adapter

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.acceptance not in ACCEPTANCE_RULES:
            raise ValueError(f"acceptance must be one of {ACCEPTANCE_RULES}, got {self.acceptance!r}")
        self.settings  # noqa: B018 -- validates the batch-shaping fields

    @property
    def settings(self) -> ModeSettings:
        return ModeSettings(**{name: getattr(self, name) for name in _SETTINGS})


@dataclass
class DecodeStats:
    mode: str
    forwards: Counter = field(default_factory=Counter)  # kind -> count (prefill, decode, draft, ...)
    generated_tokens: int = 0
    tokens_per_row: list[int] = field(default_factory=list)
    prefill_s: float = 0.0
    elapsed_s: float = 0.0
    accepted_lengths: list[list[int]] = field(default_factory=list)  # per row, per cycle (spec modes)
    block_steps: list[list[int]] = field(default_factory=list)  # per row, denoising steps per block
    block_commits: list[list[list[int]]] = field(default_factory=list)  # per row, block, step: slots committed

    @property
    def nfe(self) -> int:
        return sum(self.forwards.values())

    @property
    def tokens_per_forward(self) -> float:
        return self.generated_tokens / self.nfe if self.nfe else 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.generated_tokens / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def decode_tokens_per_second(self) -> float:
        """Throughput after the prefill (the first token, decided by the prefill, excluded)."""
        decode_s = self.elapsed_s - self.prefill_s
        n = self.generated_tokens - len(self.tokens_per_row)
        return n / decode_s if decode_s > 0 and n > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["forwards"] = dict(self.forwards)
        out.update(
            nfe=self.nfe,
            tokens_per_forward=self.tokens_per_forward,
            tokens_per_second=self.tokens_per_second,
            decode_tokens_per_second=self.decode_tokens_per_second,
        )
        return out


@dataclass
class GenerationResult:
    sequences: list[list[int]]  # generated ids per row (prompt excluded, up to and including EOS)
    finish_reasons: list[str]  # "eos" | "length" | "stop"
    stats: DecodeStats


class Row:
    """One sequence being decoded: its prompt, its own settings and random stream, its output and
    stopping state (EOS kept, max_new_tokens, stop condition, forced tokens), and what it cost.

    Decoders *offer* the tokens they decided; :meth:`offer` returns what was actually emitted: a
    prefix of the offer, cut where the row finished, or ending in a forced token that replaced the
    offered one (everything the decoder decided after that point is void).
    """

    def __init__(
        self, prompt: Sequence[int], config: GenerationConfig, index: int = 0, generator: torch.Generator | None = None
    ) -> None:
        self.prompt = [int(t) for t in prompt]
        self.config = config
        self.index = index  # the row number that config.force refers to
        if generator is None and not config.sampling.greedy:
            seeds = None if config.seeds is None else [config.seeds[index]]
            generator = make_generators(config.sampling, 1, seeds)[0]
        self.generator = generator
        self.eos = set(config.eos_token_ids)
        self.tokens: list[int] = []
        self.finish: str | None = None
        self.forwards: Counter = Counter()  # forwards whose output this row used, by kind
        self.accepted_lengths: list[int] = []  # self-speculation, per cycle
        self.block_steps: list[int] = []  # diffusion, denoising steps per block
        self.block_commits: list[list[int]] = []  # diffusion, per block and step: slots committed
        # Quadratic self-speculation carries a row's next draft from one step to the next:
        # (last emitted token + B-1 drafted tokens, their distributions or None at T = 0).
        self.draft: tuple[list[int], torch.Tensor | None] | None = None

    @property
    def active(self) -> bool:
        return self.finish is None

    @property
    def nfe(self) -> int:
        return sum(self.forwards.values())

    def last(self) -> int:
        return self.tokens[-1]

    def remaining(self) -> int:
        return self.config.max_new_tokens - len(self.tokens)

    def forced(self) -> int | None:
        return None if self.config.force is None else self.config.force(self.index, self.tokens)

    def offer(self, new: Sequence[int]) -> list[int]:
        emitted: list[int] = []
        for tok in new:
            if self.finish is not None:
                break
            tok = int(tok)
            forced = self.forced()
            replaced = forced is not None and forced != tok
            tok = forced if replaced else tok
            self.tokens.append(tok)
            emitted.append(tok)
            if tok in self.eos:
                self.finish = "eos"
            elif len(self.tokens) >= self.config.max_new_tokens:
                self.finish = "length"
            elif self.config.stop is not None and self.config.stop(self.tokens):
                self.finish = "stop"
            if replaced:
                break
        return emitted


class Batch:
    """Rows decoding together in one mode: row i of ``cache`` belongs to ``rows[i]``.

    Rows join (:meth:`Decoder.join`) and leave (:meth:`remove`) between steps; ``settings`` holds
    what all rows must share because it shapes the forwards (block size, thresholds, step budget,
    attention pattern, adapter use); everything else (sampling, seed, budget, EOS, stop) is per row.
    """

    def __init__(self, mode: str, settings: ModeSettings) -> None:
        self.settings = settings
        self.rows: list[Row] = []
        self.cache: KVCache | None = None
        self.stats = DecodeStats(mode=mode)  # batch forwards: one forward over the batch counts once
        self.demand: int | None = None  # rows the caller is decoding or holding in all (for mode policies)

    def __len__(self) -> int:
        return len(self.rows)

    def attach(self, rows: Sequence[Row], cache: KVCache) -> None:
        """Add rows whose prompts were prefilled into ``cache`` (one cache row per row)."""
        if self.cache is None:
            self.cache = cache
        else:
            self.cache.add_rows(cache)
        self.rows += list(rows)

    def remove(self, rows: Sequence[Row]) -> None:
        gone = {id(r) for r in rows}
        index = [i for i, r in enumerate(self.rows) if id(r) in gone]
        if not index:
            return
        order = self.cache.remove_rows(index)
        self.rows = [self.rows[o] for o in order]

    def remove_finished(self) -> list[Row]:
        done = [r for r in self.rows if not r.active]
        self.remove(done)
        return done


class Decoder(ABC):
    """One decoding mode, step-wise: :meth:`open` a :class:`Batch`, :meth:`join` rows to it (their
    prefill and first decision), :meth:`step` it (one cycle of the mode for every row), remove
    finished rows; rows may join and leave between steps. :meth:`generate` is that loop for a
    fixed set of prompts."""

    mode: str = ""

    def __init__(self, model: Transformer) -> None:
        self.model = model

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def suppress(self, logits: torch.Tensor) -> torch.Tensor:
        """Causal logits with a tri-mode model's mask id made impossible. The mask token is an input
        marker, never an output; every mode applies this to its AR decisions, so the modes stay
        token-for-token equivalent. (The publisher's reference lets it through every argmax; its
        golden outputs never hit that case, and SGLang's port excludes it as we do.)"""
        return forbid(logits, self.model.config.mask_token_id)

    def generate(
        self, prompts: Sequence[Sequence[int]], config: GenerationConfig, on_tokens: TokenCallback | None = None
    ) -> GenerationResult:
        """Decode ``prompts``; ``on_tokens(row, new_ids)`` is called as each row's tokens are emitted
        (after the prefill and after every step; e.g. to stream text)."""
        prompts = [list(map(int, p)) for p in prompts]
        if not prompts:
            raise ValueError("no prompts given")
        for i, p in enumerate(prompts):
            self.check_prompt(p, f"prompt {i}")
        if config.seeds is not None and len(config.seeds) != len(prompts):
            raise ValueError(f"{len(config.seeds)} seeds given for {len(prompts)} prompts")
        generators = None if config.sampling.greedy else make_generators(config.sampling, len(prompts), config.seeds)
        rows = [Row(p, config, b, None if generators is None else generators[b]) for b, p in enumerate(prompts)]
        start = time.perf_counter()
        batch = self.open(config.settings)
        sent = [0] * len(rows)
        outside = 0.0  # time spent in on_tokens, kept out of the decoder's timings

        def stream() -> None:
            nonlocal outside
            began = time.perf_counter()
            for b, row in enumerate(rows):
                if len(row.tokens) > sent[b]:
                    on_tokens(b, row.tokens[sent[b] :])
                    sent[b] = len(row.tokens)
            outside += time.perf_counter() - began

        with torch.inference_mode():
            self.join(batch, rows)
            while True:
                if on_tokens is not None:
                    stream()
                batch.remove_finished()
                if not batch.rows:
                    break
                self.step(batch)
        stats = batch.stats
        stats.elapsed_s = time.perf_counter() - start - outside
        stats.tokens_per_row = [len(r.tokens) for r in rows]
        stats.generated_tokens = sum(stats.tokens_per_row)
        if any(r.accepted_lengths for r in rows):
            stats.accepted_lengths = [r.accepted_lengths for r in rows]
        if any(r.block_commits for r in rows):
            stats.block_steps = [r.block_steps for r in rows]
            stats.block_commits = [r.block_commits for r in rows]
        return GenerationResult([r.tokens for r in rows], [str(r.finish) for r in rows], stats)

    def check_prompt(self, prompt: Sequence[int], name: str = "prompt") -> None:
        if not prompt:
            raise ValueError(f"{name} is empty; at least one token (e.g. BOS) is needed")
        vocab = self.model.config.vocab_size
        bad = [t for t in prompt if not 0 <= t < vocab]
        if bad:
            raise ValueError(f"{name} has token ids outside the vocabulary [0, {vocab}): {bad[:5]}")

    # ----------------------------------------------------------------- the step API
    def open(self, settings: ModeSettings) -> Batch:
        """An empty batch for rows sharing ``settings``."""
        self.check_settings(settings)
        return Batch(self.mode, settings)

    def check_settings(self, settings: ModeSettings) -> None:
        """ValueError when this model cannot run the mode with ``settings`` (no mask token, a block
        under the mode's minimum)."""
        spec = SPECS[self.mode]
        if spec.needs_mask:
            self.require_mask_id()
        spec.block(settings.block_size)

    def join(self, batch: Batch, rows: Sequence[Row]) -> None:
        """Prefill the new rows, make their first decision, and add them to the batch. The default
        (AR-style): a causal prefill whose last logit gives each row its first token."""
        rows = list(rows)
        logits = self.prefill(batch, rows, self.cache_extra(batch.settings, rows))
        self.choose(logits, rows)

    @abstractmethod
    def step(self, batch: Batch) -> None:
        """One cycle of the mode over every row of the batch (all active)."""

    def cache_extra(self, settings: ModeSettings, rows: Sequence[Row]) -> int:
        """Cache slots the joining ``rows`` need beyond their prompts: their budget, what one step
        writes beyond the kept tokens, and the pending last token (more are grown on demand)."""
        budget = max(row.config.max_new_tokens for row in rows)
        return budget + SPECS[self.mode].scratch(settings.block_size) + 1

    # ----------------------------------------------------------------- shared pieces
    def count(self, batch: Batch, kind: str, rows: Sequence[Row]) -> None:
        """Record one forward over the batch, used by ``rows``."""
        batch.stats.forwards[kind] += 1
        for row in rows:
            row.forwards[kind] += 1

    def last_tokens(self, rows: Sequence[Row]) -> torch.Tensor:
        """Each row's last emitted token as a [B, 1] column (the next forward's first input)."""
        return torch.tensor([[row.last()] for row in rows], device=self.device)

    def choose(self, logits: torch.Tensor, rows: Sequence[Row], which: Sequence[int] | None = None) -> None:
        """Offer each listed row (default: all) its next token drawn from its AR logits [B, V] with
        its own sampling settings; per-row draws keep a row's random stream independent of its batch."""
        which = range(len(rows)) if which is None else which
        best = logits.argmax(-1).tolist()
        for b in which:
            row = rows[b]
            if row.config.sampling.greedy:
                row.offer([best[b]])
            else:
                row.offer([int(select(logits[b : b + 1], row.config.sampling, [row.generator])[0])])

    def require_mask_id(self) -> int:
        mask_id = self.model.config.mask_token_id
        if mask_id is None:
            raise ValueError(
                f"mode {self.mode!r} needs a mask token, but the checkpoint's config.json has no mask_token_id "
                "(a plain AR model: choose one with --mask-token / trimode.model.load(..., mask_token=...), "
                "e.g. an unused special token, or use --mode ar)"
            )
        return mask_id

    def prefill(
        self, batch: Batch, rows: list[Row], extra: int, pattern: str = "causal"
    ) -> torch.Tensor:
        """Forward the new rows' prompts into a cache of their own, attach them to the batch, and
        return the last prompt position's logits [B, V] (the AR prediction of the first new token)."""
        start = time.perf_counter()
        cache = KVCache.for_model(self.model, len(rows), max(len(r.prompt) for r in rows) + extra)
        logits = self.append([r.prompt for r in rows], cache, pattern)
        batch.attach(rows, cache)
        self.count(batch, "prefill", rows)
        batch.stats.prefill_s += time.perf_counter() - start
        return logits

    def append(self, pieces: Sequence[Sequence[int]], cache: KVCache, pattern: str = "causal") -> torch.Tensor:
        """Forward row b's ``pieces[b]`` (right-padded; may be empty for a row that rides along)
        after its cached tokens, append them, and return each row's logits at its last piece token."""
        lens = [len(p) for p in pieces]
        width = max(max(lens), 1)
        ids = torch.zeros(len(pieces), width, dtype=torch.long)
        for b, p in enumerate(pieces):
            ids[b, : len(p)] = torch.tensor(list(p), dtype=torch.long)
        device = self.device
        last = (torch.tensor(lens).clamp_min(1) - 1)[:, None]
        positions = self.block_positions(cache, width)
        logits = self.model(ids.to(device), positions, cache, pattern=pattern, logits_at=last.to(device))[:, 0]
        cache.advance(lens)
        return self.suppress(logits)

    def drafting_adapter(self, settings: GenerationConfig) -> str | None:
        """The drafting adapter's name when the settings allow it and the model has one."""
        return DRAFT_ADAPTER if settings.use_adapter and DRAFT_ADAPTER in self.model.adapter_names else None

    def block_positions(self, cache: KVCache, width: int) -> torch.Tensor:
        return cache.lens[:, None] + torch.arange(width, device=self.device)
