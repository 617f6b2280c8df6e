"""Iterative block denoising, shared by diffusion decoding and self-speculation drafting.

A block of B tokens at positions p..p+B-1 (the first ``known`` slots given, the rest masked, except
``given`` slots, which hold fixed tokens inside the bidirectional part: an infilling suffix) is
forwarded bidirectionally over each row's cached prefix, read-only. After each forward every
masked slot gets a candidate and a confidence, and a row commits either its most confident slot
plus every slot with confidence >= threshold, or (threshold None) a fixed count per step, the
block's masks spread evenly over the steps, remainder first. A row stops as soon as the slots that
can still be emitted are known: an EOS with no mask to its left, or the row's remaining token
budget filled. If the step budget runs out first, the leftover masks take the last forward's
candidates (no extra forward).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .. import masks
from ..sampling import SamplingParams, candidates
from .base import Batch, Decoder, Row

GREEDY = SamplingParams()


@dataclass
class DenoiseResult:
    tokens: torch.Tensor  # [B, T] with every needed slot filled
    steps: list[int]  # denoising forwards that updated each row
    commits: list[list[int]]  # per row, slots committed by each of its forwards
    q: torch.Tensor | None  # [B, T, V]: the distribution each sampled slot was drawn from (else None)


def quota_schedule(masks: int, steps: int) -> list[int]:
    """How many masked slots to commit at each step: even split, remainder first."""
    base, rest = divmod(masks, steps)
    return [base + (1 if i < rest else 0) for i in range(steps)]


def _settled(tokens: list[int], masked: list[bool], needed: int, eos: set[int]) -> bool:
    """Whether every slot that can still be emitted (before an EOS, within ``needed``) is known."""
    for i in range(min(needed, len(tokens))):
        if masked[i]:
            return False
        if tokens[i] in eos:
            return True
    return True


def row_candidates(
    logits: torch.Tensor, rows: Sequence[Row], which: Sequence[int], exclude: int | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """:func:`~trimode.sampling.candidates` for logits [B, T, V], each listed row drawing with its
    own sampling settings and generator (rows sharing settings are drawn in one call)."""
    tokens, conf, _ = candidates(logits, GREEDY, None, which, exclude=exclude)
    groups: dict[SamplingParams, list[int]] = {}
    for b in which:
        if not rows[b].config.sampling.greedy:
            groups.setdefault(rows[b].config.sampling, []).append(b)
    probs = None
    for params, members in groups.items():
        idx = torch.tensor(members, device=logits.device)
        t, c, p = candidates(logits[idx], params, [rows[b].generator for b in members], range(len(members)), exclude)
        tokens[idx], conf[idx] = t, c
        if probs is None:
            probs = torch.zeros(logits.shape, dtype=p.dtype, device=p.device)
        probs[idx] = p
    return tokens, conf, probs


def denoise_block(
    decoder: Decoder,
    batch: Batch,
    block: torch.Tensor,
    positions: torch.Tensor,
    rows: Sequence[int],
    *,
    known: int,
    mask_id: int,
    threshold: float | None,
    max_steps: int,
    kind: str,
    needed: Sequence[int] | None = None,
    adapter: str | None = None,
    given: torch.Tensor | None = None,
) -> DenoiseResult:
    width = block.shape[1]
    members, cache = batch.rows, batch.cache
    # Which slots are masked is positional (the first ``known`` and the ``given`` ones are tokens),
    # never read off the values: a seed may legitimately equal the mask id (an AR model can emit
    # any vocabulary id).
    block = block.clone()
    masked = torch.zeros_like(block, dtype=torch.bool)
    masked[:, known:] = True
    if given is not None:
        masked &= ~given.to(masked.device)
    block[masked] = mask_id
    needed = list(needed) if needed is not None else [width] * len(members)
    steps = [0] * len(members)
    commits: list[list[int]] = [[] for _ in members]
    q = None
    schedules = {b: quota_schedule(int(masked[b].sum()), max_steps) for b in rows}
    host_tokens = block.tolist()
    host_masked = masked.tolist()
    pending = [b for b in rows if not _settled(host_tokens[b], host_masked[b], needed[b], members[b].eos)]
    tokens = conf = probs = None
    # A "masks"-scoped adapter drafts at mask slots only; the given slots stay exact causal queries
    # (adapter off, blind to the masks after them), as in its training and in a quadratic grid.
    scoped = adapter is not None and decoder.model.config.adapter_scope == "masks"
    pattern = masks.known_then_block(width, known, block.device) if scoped else "bidirectional"
    for step in range(max_steps):
        if not pending:
            break
        logits = decoder.model(block, positions, cache, pattern=pattern, adapter=adapter,
                               adapter_gate=masked if scoped else None)
        decoder.count(batch, kind, [members[b] for b in pending])
        tokens, conf, probs = row_candidates(logits, members, pending, exclude=mask_id)
        if probs is not None and q is None:
            q = torch.zeros_like(probs)
        still = []
        for b in pending:
            slots = masked[b].nonzero()[:, 0]
            c = conf[b, slots]
            if threshold is not None:
                chosen = slots[(c >= threshold) | (torch.arange(len(slots), device=c.device) == c.argmax())]
            else:
                k = min(schedules[b][step], len(slots))
                chosen = slots[torch.topk(c, k).indices] if k else slots[:0]
            block[b, chosen] = tokens[b, chosen]
            masked[b, chosen] = False
            if probs is not None:
                q[b, chosen] = probs[b, chosen]
            steps[b] += 1
            commits[b].append(len(chosen))
            if not _settled(block[b].tolist(), masked[b].tolist(), needed[b], members[b].eos):
                still.append(b)
        pending = still
    for b in pending:  # step budget spent: fill what is left from the last forward
        left = masked[b]
        block[b, left] = tokens[b, left]
        if probs is not None:
            q[b, left] = probs[b, left]
    return DenoiseResult(block, steps, commits, q)
