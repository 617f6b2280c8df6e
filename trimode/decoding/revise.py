"""Revision: re-mask the tokens the model is least sure of and denoise them again, round by round.

A token's confidence is the verifier's probability of it given everything before it: the causal
model, adapter off, the same left-to-right reading that AR generation and the server's logprobs
use. One round:
1. Score: one causal forward over context + text gives every text token its confidence. The
   context's tokens are never revised, and a text token with nothing before it has no score, so it
   is kept.
2. Re-mask the ``per_round`` least confident text tokens.
3. Walk the text in blocks of B from its start. The blocks before the first masked one keep the
   scoring pass's K/V. A block with masks is denoised as infilling denoises: its other tokens are
   given (adapter off, read both ways), and the masks are committed by confidence over the
   threshold, at least one per forward. One causal forward then commits every token up to the next
   block with masks, so that block reads the revised text. A block never sees the text after it,
   as in every block-causal forward of this model.
After the last round, one more scoring forward gives each changed token its confidence after.

Counting: forwards are ``score`` (one per round, plus the final one), ``denoise`` and ``commit``;
a round's cost is the budget knob of revision (more rounds, more forwards).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch

from ..cache import KVCache
from .base import DecodeStats, GenerationConfig, Row
from .denoise import denoise_block
from .diffusion import DiffusionDecoder


@dataclass
class Change:
    position: int  # index in the text
    old: int
    new: int
    before: float  # the verifier's probability of the old token, when it was re-masked
    after: float | None = None  # ... of the new token, at the next scoring pass


@dataclass
class RevisionResult:
    tokens: list[int]  # the revised text
    rounds: list[list[Change]]  # per round, the re-masked tokens that changed
    remasked: list[list[int]]  # per round, the text positions re-masked
    confidence: list[float | None]  # the final text's per-token confidence (None: unscored first token)
    stats: DecodeStats = field(default_factory=lambda: DecodeStats(mode="revise"))


def confidences(model, ids: Sequence[int], cache: KVCache | None = None) -> list[float | None]:
    """Each token's verifier probability given the tokens before it (None for the first token).
    With ``cache`` (empty), the pass's K/V stay in it."""
    x = torch.tensor([list(ids)], device=next(model.parameters()).device)
    logits = model(x, cache=cache)
    if cache is not None:
        cache.advance(len(ids))
    probs = torch.softmax(logits[0, :-1].float(), -1).gather(1, x[0, 1:, None])[:, 0]
    return [None] + probs.tolist()


def revise(model, context: Sequence[int], text: Sequence[int], config: GenerationConfig, *, rounds: int = 1,
           per_round: int | None = None) -> RevisionResult:
    """Revise ``text`` (read after ``context``) for ``rounds`` rounds of ``per_round`` re-masked
    tokens each (default: a tenth of the text, at least 1); ``config`` gives the block size, the
    commit threshold, the denoising step budget per block and the sampling."""
    context, text = [int(t) for t in context], [int(t) for t in text]
    decoder = DiffusionDecoder(model)
    if not text:
        raise ValueError("text is empty: nothing to revise")
    decoder.check_prompt(text, "text")
    if context:
        decoder.check_prompt(context, "context")
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    per_round = max(1, len(text) // 10) if per_round is None else per_round
    if per_round < 1:
        raise ValueError(f"per_round must be >= 1, got {per_round}")
    mask_id = decoder.require_mask_id()
    # Every re-masked slot is filled: an EOS in the text must not end a block's denoising early.
    config = replace(config, eos_token_ids=(), stop=None, force=None)
    settings, width, c = config.settings, config.block_size, len(context)
    result = RevisionResult(list(text), [], [], [])
    start = time.perf_counter()
    with torch.inference_mode():
        batch = decoder.open(settings)
        row = Row(context + text, config)
        for _ in range(rounds + 1):
            cache = KVCache.for_model(model, 1, c + len(text) + width + 1)
            conf = confidences(model, context + result.tokens, cache)[c:]
            batch.stats.forwards["score"] += 1
            for change in result.rounds[-1] if result.rounds else []:
                change.after = conf[change.position]
            if len(result.rounds) == rounds:
                result.confidence = conf
                break
            scored = [j for j in range(len(text)) if conf[j] is not None]
            chosen = sorted(sorted(scored, key=lambda j: conf[j])[:per_round])
            result.remasked.append(chosen)
            old = list(result.tokens)
            _denoise_round(decoder, batch, row, cache, result.tokens, chosen, c, width, mask_id, settings)
            result.rounds.append([Change(j, old[j], result.tokens[j], conf[j]) for j in chosen
                                  if result.tokens[j] != old[j]])
    result.stats.forwards.update(batch.stats.forwards)
    result.stats.elapsed_s = time.perf_counter() - start
    result.stats.tokens_per_row = [sum(len(r) for r in result.rounds)]
    result.stats.generated_tokens = result.stats.tokens_per_row[0]
    return result


def _denoise_round(decoder, batch, row, cache: KVCache, tokens: list[int], chosen: list[int], c: int, width: int,
                   mask_id: int, settings) -> None:
    """Denoise the ``chosen`` text positions of ``tokens`` in place, block by block (see the module
    docstring); ``cache`` holds the scoring pass's K/V of context + text."""
    device = decoder.device
    blocks = sorted({j // width for j in chosen})
    cache.crop(c + blocks[0] * width)
    batch.cache, batch.rows = cache, [row]
    for n, b in enumerate(blocks):
        lo, hi = b * width, min((b + 1) * width, len(tokens))
        ids = torch.tensor([tokens[lo:hi]], device=device)
        given = torch.ones_like(ids, dtype=torch.bool)
        given[0, [j - lo for j in chosen if lo <= j < hi]] = False
        positions = (c + lo + torch.arange(hi - lo, device=device))[None]
        done = denoise_block(decoder, batch, ids, positions, [0], known=0, mask_id=mask_id,
                             threshold=settings.threshold, max_steps=settings.max_steps or (hi - lo), kind="denoise",
                             needed=[hi - lo], adapter=decoder.denoise_adapter(settings), given=given)
        tokens[lo:hi] = done.tokens[0].tolist()
        if n + 1 < len(blocks):  # commit up to the next block with masks, so that it reads the revision
            upto = blocks[n + 1] * width
            piece = torch.tensor([tokens[lo:upto]], device=device)
            decoder.model(piece, (c + lo + torch.arange(upto - lo, device=device))[None], cache)
            cache.advance(upto - lo)
            decoder.count(batch, "commit", [row])
