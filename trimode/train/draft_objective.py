"""The drafting-adapter objective: a frozen verifier teaches an adapter to draft its own next tokens.

Per block of B positions kB .. kB+B-1 of a clean sequence x0, the draft block is
[x0[kB], MASK x (B-1)] at the same positions, reading the verifier's cache of the clean prefix;
draft slot j (1 <= j < B) proposes x[kB+j], and its target is the verifier's (adapter off, causal)
prediction for that position: CE to its argmax plus KL to its distribution.

Where the adapter acts follows the model's ``adapter_scope``:
* ``block``: the whole draft block runs with the adapter and sees itself bidirectionally; the
  seed sees only strictly earlier clean blocks (the noisy rows of the dual-stream mask).
* ``masks``: only the mask slots carry the adapter; the seed is the verifier's own causal query,
  so the masks read the clean cache up to and including the seed. This is the layout of a
  quadratic self-speculation grid row and of a masks-scoped linear draft.

Which slots are trained (``draft_loss``):
* ``prefix``: the accepted prefix of each block plus its first rejected slot (where greedy
  verification stops). An untrained drafter accepts nothing, so at first only slot 1 learns.
* ``all``: every slot, slot j weighted by ``draft_gamma ** (j-1)``: a later slot only counts once
  the earlier ones are accepted, so it matters less, but it learns from the first step.

Block phase. With ``phase`` p the draft blocks start at positions p, p+B, p+2B, ...: the same
text then supplies other (seed, slot) pairs, so that over epochs every position is trained as every
slot instead of always the same one (positions before p have no seed in the sequence and carry no
loss). The trainer draws p per micro-batch with ``draft_phase="random"``; evaluations use p = 0.

Revealed slots. Diffusion decoding commits a block a few slots at a time, so most of its forwards
see a block in which some slots are already tokens (adapter off, still in the block's bidirectional
part) and the rest masks; infilling sees the same with the given slots anywhere. ``revealed``
(see :func:`reveal_slots`) gives such slots their clean token: they carry no loss and no adapter,
and the masks around them learn to read them. Without it every trained block is fully masked, the
state of a draft's first forward only.

Cost. The verifier's pass and the draft's pass through the layers below the adapter's first layer
need no gradient; both depend only on x0, so :class:`TeacherStore` keeps them (upper-layer clean
K/V, the draft's residual stream entering the adapter's first layer, the verifier's top-k) per
training sequence and later epochs skip them. With the adapter on the upper layers only, the
backward pass stops there too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .. import masks
from ..cache import KVCache
from ..model.adapters import DRAFT_ADAPTER
from ..model.transformer import Transformer

DRAFT_LOSSES = ("prefix", "all")


def draft_mask(length: int, block: int, device: torch.device | str | None = None, scope: str = "block",
               phase: int = 0) -> torch.Tensor:
    """[L, 2L] mask for draft queries over [cached clean x0 | draft stream], blocks starting at
    ``phase`` (positions before it form a seedless partial block that sees only itself)."""
    if scope == "block":  # the noisy rows of the dual-stream mask, key halves swapped into cache order
        if phase:
            raise ValueError("a block phase needs adapter scope 'masks'")
        full = masks.dual_stream(length, block, device)[:length]
        return torch.cat([full[:, length:], full[:, :length]], dim=1)
    pos = torch.arange(length, device=device)
    start = masks.block_of(pos - phase, block) * block + phase  # negative before the first seed
    sees_clean = pos[None, :] <= start[:, None]  # the clean prefix through this block's seed
    slot = ((pos - phase) % block) >= 1
    same_block = start[:, None] == start[None, :]
    sees_masks = same_block & slot[None, :] & slot[:, None]
    return torch.cat([sees_clean, sees_masks], dim=1)


def block_offsets(positions: torch.Tensor, block: int, phase: int = 0) -> torch.Tensor:
    """Each position's slot in its draft block (0: the seed); -1 before the first seed."""
    offset = (positions - phase) % block
    return torch.where(positions < phase, torch.full_like(offset, -1), offset)


def reveal_slots(offset: torch.Tensor, block: int, fraction: float, generator: torch.Generator) -> torch.Tensor:
    """bool [rows, L]: draft slots given as their clean tokens. In a ``fraction`` of the blocks
    (drawn per block), k of the B-1 slots are given, k uniform in 1..B-2 so that at least one mask
    is left: half of those blocks give their first k slots (the left-to-right state diffusion mostly
    passes through), half k slots chosen uniformly (out-of-order commits, infilling gaps).
    ``offset`` is :func:`block_offsets`' [rows, L]; positions before the first seed are never given."""
    if fraction <= 0 or block < 3:
        return torch.zeros_like(offset, dtype=torch.bool)
    rows, length = offset.shape
    # Block index per position, from the offsets (the seed at offset 0 opens a block).
    block_id = torch.cumsum((offset == 0).long(), dim=1) - 1  # -1 before the first seed
    n = int(block_id.max()) + 2
    u = torch.rand(rows, n, generator=generator).to(offset.device)
    k = torch.randint(1, block - 1, (rows, n), generator=generator).to(offset.device)
    ordered = torch.rand(rows, n, generator=generator).to(offset.device) < 0.5
    score = torch.rand(rows, length, generator=generator).to(offset.device)
    idx = block_id.clamp_min(0)
    # In an "ordered" block a slot's rank is its offset - 1; otherwise its rank among its block's
    # slots by a random score.
    slot = offset >= 1
    same = (block_id[:, :, None] == block_id[:, None, :]) & slot[:, None, :]
    rank = ((score[:, None, :] < score[:, :, None]) & same).sum(-1)
    rank = torch.where(ordered.gather(1, idx), offset - 1, rank)
    chosen = (u < fraction).gather(1, idx)
    return slot & (block_id >= 0) & chosen & (rank < k.gather(1, idx))


def frozen_below(model: Transformer, adapter: str = DRAFT_ADAPTER) -> int:
    """How many lower layers the draft runs without gradient: those below the adapter's first
    layer, unless the mask token's embedding learns (its gradient must then cross every layer)."""
    return 0 if model.model.embed_tokens.weight.requires_grad else adapter_start(model, adapter)


def adapter_start(model: Transformer, adapter: str = DRAFT_ADAPTER) -> int:
    """The first layer that carries the adapter."""
    for i, layer in enumerate(model.model.layers):
        if any(adapter in m.adapters for m in layer.modules() if hasattr(m, "adapters")):
            return i
    raise ValueError(f"the model has no {adapter!r} adapter")


@dataclass
class LossTerms:
    """Sums over this micro-batch; ``loss`` carries the gradient (weights already applied)."""

    loss: torch.Tensor
    count: int  # tokens this micro-batch contributes to the global denominator
    logs: dict[str, float]


@dataclass
class Teacher:
    """What the drafter's step needs from the frozen model, for some rows of one batch."""

    k: list[torch.Tensor]  # per layer >= start: the clean stream's keys [rows, kv, L, hd]
    v: list[torch.Tensor]
    hidden: torch.Tensor  # [rows, L, H]: the draft stream entering layer ``start``
    top_ids: torch.Tensor  # [rows, L, k]: the verifier's top-k for position i (made at i-1; row 0 unused)
    top_logp: torch.Tensor  # [rows, L, k] log-probabilities (over the full vocabulary)
    start: int
    phase: int = 0  # the block phase ``hidden`` (and the top-k's slots) were made for

    def rows(self, idx: list[int]) -> "Teacher":
        return Teacher([k[idx] for k in self.k], [v[idx] for v in self.v], self.hidden[idx], self.top_ids[idx],
                       self.top_logp[idx], self.start, self.phase)

    def to(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> "Teacher":
        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=device, dtype=dtype if t.is_floating_point() else t.dtype)

        return Teacher([move(k) for k in self.k], [move(v) for v in self.v], move(self.hidden), move(self.top_ids),
                       move(self.top_logp), self.start, self.phase)

    @staticmethod
    def cat(parts: list["Teacher"]) -> "Teacher":
        return Teacher([torch.cat(ks) for ks in zip(*(p.k for p in parts))],
                       [torch.cat(vs) for vs in zip(*(p.v for p in parts))],
                       torch.cat([p.hidden for p in parts]), torch.cat([p.top_ids for p in parts]),
                       torch.cat([p.top_logp for p in parts]), parts[0].start, parts[0].phase)

    def nbytes(self) -> int:
        tensors = [*self.k, *self.v, self.hidden, self.top_ids, self.top_logp]
        return sum(t.numel() * t.element_size() for t in tensors)


class TeacherStore:
    """Teachers of training sequences by dataset index, kept (in ``dtype``, on the CPU) within a
    byte budget; sequences past the budget are recomputed each time they come up."""

    def __init__(self, budget_mb: float, dtype: torch.dtype = torch.bfloat16) -> None:
        self.budget = int(budget_mb * 2**20)
        self.dtype = dtype
        self.items: dict[int, Teacher] = {}
        self.used = 0
        self.hits = self.misses = 0

    def get(self, index: int) -> Teacher | None:
        item = self.items.get(index)
        if item is None:
            self.misses += 1
        else:
            self.hits += 1
        return item

    def put(self, index: int, teacher: Teacher) -> None:
        if index in self.items:
            return
        stored = teacher.to(dtype=self.dtype, device="cpu")
        size = stored.nbytes()
        if self.used + size <= self.budget:
            self.items[index] = stored
            self.used += size


def compute_teacher(model: Transformer, x0: torch.Tensor, block: int, start: int, topk: int, scope: str,
                    loss_mask: torch.Tensor | None = None, phase: int = 0,
                    revealed: torch.Tensor | None = None) -> Teacher:
    """The verifier's pass over x0 and the draft's pass through layers < ``start`` (no gradient),
    with the ``revealed`` slots given as tokens. The verifier's top-k is kept at draft slots inside
    ``loss_mask`` only (zeros elsewhere)."""
    rows, length = x0.shape
    mask_id = model.config.mask_token_id
    positions = torch.arange(length, device=x0.device).expand(rows, length)
    offset = block_offsets(positions, block, phase)
    slots = offset[:, 1:] >= 1
    if loss_mask is not None:
        slots = slots & loss_mask[:, 1:].bool()
    cache = KVCache.for_model(model, rows, 2 * length)
    with torch.no_grad():
        verifier = model.hidden_states(x0, positions, cache, pattern="causal")
        logp = torch.log_softmax(model.logits(verifier[:, :-1][slots]).float(), dim=-1)  # [n, V]
        k = min(topk, logp.shape[-1])
        top_logp = torch.zeros(rows, length, k, device=x0.device)
        top_ids = torch.zeros(rows, length, k, dtype=torch.long, device=x0.device)
        top_logp[:, 1:][slots], top_ids[:, 1:][slots] = logp.topk(k, dim=-1)
        del logp
        cache.advance(length)
        hidden = model.model.embed_tokens(draft_input(x0, offset, mask_id, revealed))
        if start > 0:
            hidden = model.layer_states(hidden, positions, cache, stop=start,
                                        pattern=draft_mask(length, block, x0.device, scope, phase))
    ks = [cache.k[i][:, :, :length].clone() for i in range(start, len(model.model.layers))]
    vs = [cache.v[i][:, :, :length].clone() for i in range(start, len(model.model.layers))]
    return Teacher(ks, vs, hidden, top_ids, top_logp, start, phase)


def teacher_for(model: Transformer, x0: torch.Tensor, loss_mask: torch.Tensor, settings: "DraftSettings",
                revealed: torch.Tensor | None = None) -> Teacher:
    """:func:`compute_teacher` with what the model and settings imply: its frozen layers and scope."""
    return compute_teacher(model, x0, settings.block_size, frozen_below(model, settings.adapter), settings.topk,
                           model.config.adapter_scope, loss_mask, settings.phase, revealed)


def draft_input(x0: torch.Tensor, offset: torch.Tensor, mask_id: int, revealed: torch.Tensor | None) -> torch.Tensor:
    """The draft stream's tokens: seeds and revealed slots from x0, masks elsewhere."""
    given = offset == 0 if revealed is None else (offset == 0) | revealed
    return torch.where(given, x0, torch.full_like(x0, mask_id))


@dataclass(frozen=True)
class DraftSettings:
    block_size: int
    loss: str = "prefix"
    gamma: float = 0.8
    ce_weight: float = 1.0
    kl_weight: float = 1.0
    topk: int = 0  # 0: KL to the full distribution (needs the verifier's full logits, so no store)
    adapter: str = DRAFT_ADAPTER
    phase: int = 0  # draft blocks start at positions phase, phase + B, ... (0 <= phase < B)


def draft_terms(
    model: Transformer, x0: torch.Tensor, loss_mask: torch.Tensor, settings: DraftSettings,
    teacher: Teacher | None = None, revealed: torch.Tensor | None = None,
):
    """Loss sums of the drafting adapter (see the module docstring) and what it logs. Blocks with
    ``revealed`` slots are not whole, so the accepted-length logs count fully masked blocks only."""
    mask_id = model.config.mask_token_id
    if mask_id is None:
        raise ValueError("the adapter objective needs a mask token: the model config has no mask_token_id")
    if settings.adapter not in model.adapter_names:
        raise ValueError(f"the model has no {settings.adapter!r} adapter to train (has {model.adapter_names})")
    if settings.loss not in DRAFT_LOSSES:
        raise ValueError(f"draft loss must be one of {DRAFT_LOSSES}, got {settings.loss!r}")
    block, phase = settings.block_size, settings.phase
    logits, logq, verifier_top, kl_each, slots, offset = draft_forward(model, x0, loss_mask, settings, teacher,
                                                                       revealed)
    ce_each = F.cross_entropy(logits, verifier_top, reduction="none")
    hit_at_slots = logits.detach().argmax(-1) == verifier_top
    hit = ~slots
    hit[slots] = hit_at_slots
    slot_offset = offset[:, 1:][slots]
    if settings.loss == "prefix":
        weight = (slots & accepted_prefix_plus_one(hit, block, phase))[slots].float()
    else:
        weight = settings.gamma ** (slot_offset - 1).float()
    ce, kl = (ce_each * weight).sum(), (kl_each * weight).sum()
    loss = settings.ce_weight * ce + settings.kl_weight * kl
    count = float(weight.sum())
    logs = {"distill_ce_sum": float(ce.detach()), "distill_kl_sum": float(kl.detach()), "draft_slots": count,
            "draft_hits": int(hit_at_slots.sum()), "draft_eligible": int(slots.sum())}
    logs.update(slot_logs(hit, slots, block, settings.phase))
    return LossTerms(loss, count, logs)


def draft_forward(model: Transformer, x0: torch.Tensor, loss_mask: torch.Tensor, settings: DraftSettings,
                  teacher: Teacher | None = None, revealed: torch.Tensor | None = None):
    """The draft's logits at the trained slots, their log-softmax, the verifier's argmax there, the
    per-slot KL to the verifier, the slot mask [B, L-1] (column c = position c+1) and the offsets.
    ``revealed`` [B, L] slots are given as tokens: adapter off, no loss."""
    scope, mask_id = model.config.adapter_scope, model.config.mask_token_id
    rows, length = x0.shape
    block, phase = settings.block_size, settings.phase
    if not 0 <= phase < block:
        raise ValueError(f"block phase must be in [0, {block}), got {phase}")
    positions = torch.arange(length, device=x0.device).expand(rows, length)
    offset = block_offsets(positions, block, phase)
    masked = offset >= 1
    if revealed is not None:
        if scope != "masks":
            raise ValueError("revealed slots need adapter scope 'masks' (the adapter must stay off at given slots)")
        if teacher is not None:
            raise ValueError("a teacher holds the lower-layer pass of fully masked blocks: revealed slots need "
                             "the pass made for them (teacher=None)")
        masked = masked & ~revealed
    slots = masked[:, 1:] & loss_mask[:, 1:].bool()  # column c is position c+1
    pattern = draft_mask(length, block, x0.device, scope, phase)
    gate = masked if scope == "masks" else None
    start = frozen_below(model, settings.adapter)

    full_target = None
    if teacher is None and settings.topk == 0:
        cache = KVCache.for_model(model, rows, 2 * length)
        with torch.no_grad():
            verifier = model.hidden_states(x0, positions, cache, pattern="causal")
            full_target = torch.log_softmax(model.logits(verifier[:, :-1][slots]).float(), -1)
        cache.advance(length)
        x = model.model.embed_tokens(draft_input(x0, offset, mask_id, revealed))
        with torch.set_grad_enabled(start == 0 and torch.is_grad_enabled()):
            x = model.layer_states(x, positions, cache, pattern=pattern, stop=start) if start else x
    else:
        if teacher is None:
            teacher = teacher_for(model, x0, loss_mask, settings, revealed)
        if teacher.start != start or teacher.phase != phase:
            raise ValueError(f"teacher made for adapter start {teacher.start} and block phase {teacher.phase}, "
                             f"the model trains from layer {start} at phase {phase}")
        cache = KVCache.for_model(model, rows, 2 * length)
        dtype = cache.dtype
        for j, i in enumerate(range(start, len(model.model.layers))):
            cache.k[i][:, :, :length] = teacher.k[j].to(dtype)
            cache.v[i][:, :, :length] = teacher.v[j].to(dtype)
        cache.advance(length)
        x = teacher.hidden.to(x0.device, model.model.embed_tokens.weight.dtype)
    x = model.layer_states(x, positions, cache, pattern=pattern, adapter=settings.adapter, adapter_gate=gate, start=start)
    logits = model.logits(model.model.norm(x)[:, 1:][slots])
    logq = F.log_softmax(logits, -1)
    if full_target is not None:
        verifier_top = full_target.argmax(-1)
        kl_each = F.kl_div(logq, full_target, log_target=True, reduction="none").sum(-1)
    else:
        ids = teacher.top_ids[:, 1:][slots].to(x0.device)
        tlogp = teacher.top_logp[:, 1:][slots].to(x0.device).float()
        verifier_top = ids[:, 0]
        # KL to the verifier's top-k, renormalised (the tail it drops carries little mass).
        p = torch.softmax(tlogp, -1)
        kl_each = (p * (torch.log(p.clamp_min(1e-30)) - logq.gather(1, ids))).sum(-1)
    return logits, logq, verifier_top, kl_each, slots, offset


def slot_logs(hit: torch.Tensor, slots: torch.Tensor, block: int, phase: int = 0) -> dict[str, float]:
    """Per-slot hits (teacher forced) and the accepted draft length per block: on the model's own
    greedy text, what linear self-speculation at this block would accept."""
    offset = block_offsets(torch.arange(1, hit.shape[1] + 1, device=hit.device), block, phase)
    logs: dict[str, float] = {}
    for j in range(1, block):
        cols = offset == j
        logs[f"slot{j}_hits"] = int((hit[:, cols] & slots[:, cols]).sum())
        logs[f"slot{j}_eligible"] = int(slots[:, cols].sum())
    # Whole blocks only (all B-1 slots trainable): accepted = leading hits. Past the first ``phase``
    # columns (no seed before them), column kB+B-1 is the next block's seed, so columns viewed B at
    # a time give one block's slots and a spare column.
    hit, slots = hit[:, phase:], slots[:, phase:]
    n = hit.shape[1]
    pad = (-n) % block
    h = F.pad(hit & slots, (0, pad)).view(hit.shape[0], -1, block)[:, :, : block - 1]
    s = F.pad(slots, (0, pad)).view(hit.shape[0], -1, block)[:, :, : block - 1]
    whole = s.all(-1)
    accepted = h.long().cumprod(-1).sum(-1)
    logs["accepted_sum"] = int(accepted[whole].sum())
    logs["blocks"] = int(whole.sum())
    return logs


def accepted_prefix_plus_one(hit: torch.Tensor, block: int, phase: int = 0) -> torch.Tensor:
    """``hit`` [B, n] covers positions 1..n (column c is position c+1). Per block of positions
    (blocks starting at ``phase``), keep the slots up to and including the first miss: where greedy
    verification would stop."""
    n = hit.shape[1]
    block_id = torch.div(torch.arange(1, n + 1, device=hit.device) - phase, block, rounding_mode="floor")
    miss = (~hit).long()
    keep = torch.zeros_like(hit)
    for b in torch.unique(block_id).tolist():
        cols = (block_id == b).nonzero().flatten()
        misses_before = torch.cumsum(miss[:, cols], dim=1) - miss[:, cols]
        keep[:, cols] = misses_before == 0
    return keep
