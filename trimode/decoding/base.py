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
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ..cache import KVCache
from ..model.transformer import Transformer
from ..sampling import SamplingParams, forbid, make_generators, select

# A stop condition sees a row's generated ids and says whether the row is finished.
StopCondition = Callable[[Sequence[int]], bool]
# A force rule sees (row, generated ids) and names the token that must come next, or None
# (e.g. the end-of-thinking token once a thinking budget is spent; see trimode.decoding.thinking).
ForceRule = Callable[[int, Sequence[int]], "int | None"]
ACCEPTANCE_RULES = ("speculative", "exact-match")


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = 128
    sampling: SamplingParams = field(default_factory=SamplingParams)
    eos_token_ids: tuple[int, ...] = ()
    stop: StopCondition | None = None
    seeds: tuple[int | None, ...] | None = None  # per-row seeds; default: sampling.seed + row
    force: ForceRule | None = None
    # Block-diffusion and self-speculation knobs (ignored by AR).
    block_size: int = 32
    threshold: float | None = 0.9  # diffusion: commit slots with confidence >= threshold; None = fixed count
    max_steps: int | None = None  # denoising steps per block (inference budget); None = block_size
    causal_context: bool = True  # diffusion: prefill and commit passes causal (False: bidirectional)
    draft_threshold: float | None = 0.0  # linear spec drafting; 0 = fill the whole draft in one forward
    use_adapter: bool = True  # linear spec: draft with the drafting adapter when the model has one
    acceptance: str = "speculative"  # T > 0: "speculative" (lossless) or "exact-match" (reference)

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {self.block_size}")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1] or None, got {self.threshold}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 or None, got {self.max_steps}")
        if self.draft_threshold is not None and not 0.0 <= self.draft_threshold <= 1.0:
            raise ValueError(f"draft_threshold must be in [0, 1] or None, got {self.draft_threshold}")
        if self.acceptance not in ACCEPTANCE_RULES:
            raise ValueError(f"acceptance must be one of {ACCEPTANCE_RULES}, got {self.acceptance!r}")


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


class Rows:
    """Per-row output and stopping state: EOS (kept), max_new_tokens, stop condition, forced tokens.

    Decoders *offer* the tokens they decided; :meth:`offer` returns what was actually emitted: a
    prefix of the offer, cut where the row finished, or ending in a forced token that replaced the
    offered one (everything the decoder decided after that point is void).
    """

    def __init__(self, batch: int, config: GenerationConfig) -> None:
        self.config = config
        self.eos = set(config.eos_token_ids)
        self.tokens: list[list[int]] = [[] for _ in range(batch)]
        self.finish: list[str | None] = [None] * batch

    def active(self, b: int) -> bool:
        return self.finish[b] is None

    @property
    def active_rows(self) -> list[int]:
        return [b for b, f in enumerate(self.finish) if f is None]

    @property
    def done(self) -> bool:
        return all(f is not None for f in self.finish)

    def last(self, b: int) -> int:
        return self.tokens[b][-1]

    def remaining(self, b: int) -> int:
        return self.config.max_new_tokens - len(self.tokens[b])

    def forced(self, b: int) -> int | None:
        return None if self.config.force is None else self.config.force(b, self.tokens[b])

    def offer(self, b: int, new: Sequence[int]) -> list[int]:
        emitted: list[int] = []
        for tok in new:
            if self.finish[b] is not None:
                break
            tok = int(tok)
            forced = self.forced(b)
            replaced = forced is not None and forced != tok
            tok = forced if replaced else tok
            self.tokens[b].append(tok)
            emitted.append(tok)
            if tok in self.eos:
                self.finish[b] = "eos"
            elif len(self.tokens[b]) >= self.config.max_new_tokens:
                self.finish[b] = "length"
            elif self.config.stop is not None and self.config.stop(self.tokens[b]):
                self.finish[b] = "stop"
            if replaced:
                break
        return emitted


class Decoder(ABC):
    """One decoding mode. Subclasses implement :meth:`_generate` on validated prompts."""

    mode: str = ""

    def __init__(self, model: Transformer) -> None:
        self.model = model

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def suppress(self, logits: torch.Tensor) -> torch.Tensor:
        """Causal logits with a tri-mode model's mask id made impossible. The mask token is an input
        marker, never an output; every mode applies this to its AR decisions, so the modes stay
        token-for-token equivalent (the reference lets it through, see fixtures README surprise 1)."""
        return forbid(logits, self.model.config.mask_token_id)

    def generate(self, prompts: Sequence[Sequence[int]], config: GenerationConfig) -> GenerationResult:
        prompts = [list(map(int, p)) for p in prompts]
        if not prompts:
            raise ValueError("no prompts given")
        vocab = self.model.config.vocab_size
        for i, p in enumerate(prompts):
            if not p:
                raise ValueError(f"prompt {i} is empty; at least one token (e.g. BOS) is needed")
            bad = [t for t in p if not 0 <= t < vocab]
            if bad:
                raise ValueError(f"prompt {i} has token ids outside the vocabulary [0, {vocab}): {bad[:5]}")
        if config.seeds is not None and len(config.seeds) != len(prompts):
            raise ValueError(f"{len(config.seeds)} seeds given for {len(prompts)} prompts")
        stats = DecodeStats(mode=self.mode)
        start = time.perf_counter()
        with torch.inference_mode():
            sequences, finish = self._generate(prompts, config, stats)
        stats.elapsed_s = time.perf_counter() - start
        stats.tokens_per_row = [len(s) for s in sequences]
        stats.generated_tokens = sum(stats.tokens_per_row)
        return GenerationResult(sequences, finish, stats)

    @abstractmethod
    def _generate(
        self, prompts: list[list[int]], config: GenerationConfig, stats: DecodeStats
    ) -> tuple[list[list[int]], list[str]]: ...

    # ----------------------------------------------------------------- shared steps
    def new_cache(self, prompts: list[list[int]], extra: int) -> KVCache:
        return KVCache.for_model(self.model, len(prompts), max(len(p) for p in prompts) + extra)

    def start(
        self, prompts: list[list[int]], config: GenerationConfig, cache_extra: int
    ) -> tuple[KVCache, list[torch.Generator] | None, Rows]:
        """The state every mode begins with: a cache, one RNG per row (when sampling), row states."""
        generators = None if config.sampling.greedy else make_generators(config.sampling, len(prompts), config.seeds)
        return self.new_cache(prompts, cache_extra), generators, Rows(len(prompts), config)

    def last_tokens(self, rows: Rows) -> torch.Tensor:
        """Each row's last emitted token as a [B, 1] column (the next forward's first input)."""
        return torch.tensor([[rows.last(b)] for b in range(len(rows.tokens))], device=self.device)

    def require_mask_id(self) -> int:
        mask_id = self.model.config.mask_token_id
        if mask_id is None:
            raise ValueError(
                f"mode {self.mode!r} needs a mask token, but the checkpoint's config.json has no mask_token_id "
                "(a plain AR model: choose one with --mask-token / trimode.model.convert.set_mask_token, "
                "e.g. an unused special token, or use --mode ar)"
            )
        return mask_id

    def require_block(self, config: GenerationConfig) -> int:
        if config.block_size < 2:
            raise ValueError(f"{self.mode} needs block_size >= 2 (a seed and a draft), got {config.block_size}")
        return config.block_size

    @staticmethod
    def offer_seeds(logits: torch.Tensor, rows: Rows, which, config: GenerationConfig, generators) -> None:
        """Offer each listed row its next token drawn from its AR logits [B, V]; per-row draws keep
        a row's random stream independent of its batch."""
        for b in which:
            gens = None if generators is None else [generators[b]]
            rows.offer(b, [int(select(logits[b : b + 1], config.sampling, gens)[0])])

    def prefill(
        self, prompts: list[list[int]], cache: KVCache, stats: DecodeStats, pattern: str = "causal"
    ) -> torch.Tensor:
        """Forward over the prompts; appends them to the cache and returns the last prompt
        position's logits [B, V] (the AR prediction of the first new token)."""
        start = time.perf_counter()
        logits = self.append(prompts, cache, pattern)
        stats.forwards["prefill"] += 1
        stats.prefill_s = time.perf_counter() - start
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

    def block_positions(self, cache: KVCache, width: int) -> torch.Tensor:
        return cache.lens[:, None] + torch.arange(width, device=self.device)
