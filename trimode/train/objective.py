"""Training objectives over a batch of clean sequences x0 [B, L] with a loss mask [B, L].

* ``joint`` (the published joint AR + diffusion loss): one forward over the dual stream [x_t | x_0] (shared positions, the
  :func:`trimode.masks.dual_stream` mask). Diffusion loss = Σ_masked CE(noisy logits, x0) / p,
  AR loss = Σ CE(clean logits[i], x0[i+1]); total = w_diff·L_diff + w_ar·L_AR.
* ``ar``: the AR loss alone on a plain causal forward (the baseline and AR-only continued training).
* ``adapter``: the drafting adapter learns to make the draft [x0[kB], MASK x (B-1)] (reading the
  verifier's cache of the clean prefix) match the verifier (adapter off, causal): CE to its argmax
  plus KL to its distribution (:mod:`trimode.train.draft_objective`).

Every objective returns *sums* and a token *count*; the trainer divides by the count summed over
the whole global batch (all micro-batches and ranks) so that the loss is a global token average.
Logits are computed only where a loss term needs them (a 49k-vocab head over 2L positions is most
of the memory otherwise).

Corruption randomness is drawn per row from a generator keyed by (seed, step, global row index):
data-parallel ranks draw from different streams (the publisher's per-rank mask ratio), and the
result does not depend on how the global batch is split across ranks or micro-batches.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .. import masks
from ..model.adapters import DRAFT_ADAPTER
from ..model.transformer import Transformer
from .draft_objective import (
    DRAFT_LOSSES,
    DraftSettings,
    LossTerms,
    Teacher,
    accepted_prefix_plus_one,
    block_offsets,
    draft_mask,
    draft_terms,
    reveal_slots,
)

__all__ = ["accepted_prefix_plus_one", "draft_mask"]  # re-exported: the adapter objective's pieces

OBJECTIVES = ("joint", "ar", "adapter")
DRAFT_PHASES = ("fixed", "random")
MASKINGS = ("uniform", "blockwise")


@dataclass(frozen=True)
class ObjectiveConfig:
    kind: str = "joint"
    block_size: int = 32
    diffusion_weight: float = 0.3
    ar_weight: float = 1.0
    eps: float = 1e-3
    masking: str = "uniform"  # "blockwise": exactly round(p·n) masked per block, later positions favoured at small p
    blockwise_bias: float = 3.0  # strength of that bias towards later positions
    # The reference's accounting: the AR side ignores the loss mask and counts L tokens for L-1 terms.
    reference_ar_count: bool = False
    adapter: str = DRAFT_ADAPTER
    distill_ce_weight: float = 1.0
    distill_kl_weight: float = 1.0
    draft_loss: str = "prefix"  # adapter objective: "prefix" (accepted prefix + 1) or "all" (every slot, weighted)
    draft_gamma: float = 0.8  # "all": slot j weighs gamma^(j-1)
    distill_topk: int = 0  # KL to the verifier's top-k (0: the full distribution); a teacher store needs k > 0
    # Adapter objective: draft blocks start at position 0 of every sequence ("fixed"), or at a phase
    # drawn per micro-batch ("random"), so that repeated epochs train each position as every slot.
    draft_phase: str = "fixed"
    # Adapter objective: the fraction of draft blocks in which some slots are given as tokens (the
    # partly committed blocks diffusion decoding and infilling forward; see reveal_slots).
    draft_reveal: float = 0.0
    # Dual-stream attention: "auto" = flex-attention (block-sparse) on CUDA, boolean-mask SDPA elsewhere.
    attention: str = "auto"

    def __post_init__(self) -> None:
        if self.kind not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.kind!r}")
        if self.masking not in MASKINGS:
            raise ValueError(f"masking must be one of {MASKINGS}, got {self.masking!r}")
        if self.block_size < 2:
            raise ValueError(f"training block_size must be >= 2, got {self.block_size}")
        if self.attention not in ("auto", "sdpa", "flex"):
            raise ValueError(f"attention must be auto, sdpa or flex, got {self.attention!r}")
        if not 0.0 < self.eps < 1.0:
            raise ValueError(f"eps must be in (0, 1), got {self.eps}")
        if self.draft_loss not in DRAFT_LOSSES:
            raise ValueError(f"draft_loss must be one of {DRAFT_LOSSES}, got {self.draft_loss!r}")
        if not 0.0 < self.draft_gamma <= 1.0:
            raise ValueError(f"draft_gamma must be in (0, 1], got {self.draft_gamma}")
        if self.draft_phase not in DRAFT_PHASES:
            raise ValueError(f"draft_phase must be one of {DRAFT_PHASES}, got {self.draft_phase!r}")
        if not 0.0 <= self.draft_reveal <= 1.0:
            raise ValueError(f"draft_reveal must be in [0, 1], got {self.draft_reveal}")
        if self.draft_reveal > 0 and self.block_size < 3:
            raise ValueError(f"draft_reveal needs block_size >= 3 (a block must keep a mask), got {self.block_size}")
        if self.distill_topk < 0:
            raise ValueError(f"distill_topk must be >= 0, got {self.distill_topk}")

    def draft_settings(self, phase: int = 0) -> DraftSettings:
        return DraftSettings(self.block_size, self.draft_loss, self.draft_gamma, self.distill_ce_weight,
                             self.distill_kl_weight, self.distill_topk, self.adapter, phase)


def draft_phase(cfg: ObjectiveConfig, seed: int, step: int, first_row: int) -> int:
    """The block phase of one micro-batch: 0 for ``fixed``; for ``random`` drawn from the generator of
    (seed, step, first row), so a resumed run draws the same phases."""
    if cfg.draft_phase == "fixed":
        return 0
    return int(torch.randint(cfg.block_size, (1,), generator=row_generator(seed, step, first_row)))


def draft_revealed(cfg: ObjectiveConfig, seed: int, step: int, first_row: int, shape: tuple[int, int],
                   phase: int, device: torch.device | str) -> torch.Tensor | None:
    """The slots of one micro-batch given as tokens (None without ``draft_reveal``), drawn from a
    generator of (seed, step, first row) apart from the phase's, so a resumed run draws the same."""
    if cfg.draft_reveal <= 0:
        return None
    offset = block_offsets(torch.arange(shape[1]).expand(shape), cfg.block_size, phase)
    generator = row_generator(seed, step, first_row + REVEAL_STREAM)
    return reveal_slots(offset, cfg.block_size, cfg.draft_reveal, generator).to(device)


# Row offset of the reveal draws' generator: far past any micro-batch's rows, so its stream never
# coincides with the phase's (seed, step, first_row) stream.
REVEAL_STREAM = 1 << 30


@dataclass
class Corruption:
    masked: torch.Tensor  # bool [B, L]
    p: torch.Tensor  # float [B], the per-sequence masking probability

    @property
    def count(self) -> int:
        return int(self.masked.sum())


def row_generator(seed: int, step: int, row: int) -> torch.Generator:
    digest = hashlib.sha256(f"trimode:{seed}:{step}:{row}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def corrupt(
    loss_mask: torch.Tensor, cfg: ObjectiveConfig, seed: int, step: int, first_row: int
) -> Corruption:
    """Draw t ~ U(0,1), p = (1-eps)·t + eps per sequence and mask loss-mask tokens with probability p
    (``uniform``), or exactly round(p·n) of them per block (``blockwise``). Rows are numbered
    globally from ``first_row`` so every rank and micro-batch draws its rows' own streams."""
    rows, length = loss_mask.shape
    masked = torch.zeros(rows, length, dtype=torch.bool)
    p = torch.empty(rows)
    eligible = loss_mask.cpu().bool()
    for r in range(rows):
        gen = row_generator(seed, step, first_row + r)
        p[r] = (1 - cfg.eps) * torch.rand((), generator=gen) + cfg.eps
        if cfg.masking == "uniform":
            masked[r] = (torch.rand(length, generator=gen) < p[r]) & eligible[r]
        else:
            masked[r] = _blockwise(eligible[r], float(p[r]), cfg, gen)
    return Corruption(masked.to(loss_mask.device), p.to(loss_mask.device))


def _blockwise(eligible: torch.Tensor, p: float, cfg: ObjectiveConfig, gen: torch.Generator) -> torch.Tensor:
    """Efficient-DLM style: per block, mask exactly round(p·n) eligible slots, chosen by weighted
    sampling without replacement (Efraimidis-Spirakis keys u^(1/w)) with w growing along the block
    as exp(bias·(1-p)·j/B): at small p the masks sit mostly late in the block, as decoding meets them."""
    length = eligible.shape[0]
    out = torch.zeros(length, dtype=torch.bool)
    u = torch.rand(length, generator=gen)
    for start in range(0, length, cfg.block_size):
        idx = torch.arange(start, min(start + cfg.block_size, length))
        idx = idx[eligible[idx]]
        k = round(p * len(idx))
        if k == 0:
            continue
        j = (idx - start).float()
        weight = torch.exp(cfg.blockwise_bias * (1 - p) * j / cfg.block_size)
        keys = u[idx].clamp_min(1e-12).log() / weight
        out[idx[keys.topk(k).indices]] = True
    return out


def ar_targets(x0: torch.Tensor, loss_mask: torch.Tensor, cfg: ObjectiveConfig) -> tuple[torch.Tensor, int]:
    """Which clean positions i carry an AR term CE(logits[i], x0[i+1]) ([B, L-1] bool), and the
    count they add to the denominator."""
    if cfg.reference_ar_count:
        sel = torch.ones(x0.shape[0], x0.shape[1] - 1, dtype=torch.bool, device=x0.device)
        return sel, x0.numel()
    sel = loss_mask[:, 1:].bool()
    return sel, int(sel.sum())


def joint_terms(
    model: Transformer, x0: torch.Tensor, loss_mask: torch.Tensor, corruption: Corruption, cfg: ObjectiveConfig
) -> LossTerms:
    mask_id = model.config.mask_token_id
    if mask_id is None:
        raise ValueError("the joint objective needs a mask token: the model config has no mask_token_id")
    rows, length = x0.shape
    xt = torch.where(corruption.masked, torch.full_like(x0, mask_id), x0)
    positions = torch.arange(length, device=x0.device).repeat(2).expand(rows, 2 * length)
    pattern = _training_mask(length, cfg, x0.device)
    hidden = model.hidden_states(torch.cat([xt, x0], dim=1), positions, pattern=pattern)
    noisy, clean = hidden[:, :length], hidden[:, length:]

    masked = corruption.masked
    diff_ce = F.cross_entropy(model.logits(noisy[masked]), x0[masked], reduction="none")
    inv_p = (1.0 / corruption.p)[:, None].expand(rows, length)[masked]
    diff_sum = (diff_ce * inv_p).sum()

    sel, ar_count = ar_targets(x0, loss_mask, cfg)
    ar_ce = F.cross_entropy(model.logits(clean[:, :-1][sel]), x0[:, 1:][sel], reduction="sum")
    loss = cfg.diffusion_weight * diff_sum + cfg.ar_weight * ar_ce
    logs = {"diffusion_sum": float(diff_sum.detach()), "ar_sum": float(ar_ce.detach()), "masked": corruption.count,
            "ar_tokens": int(sel.sum()), "diffusion_ce_sum": float(diff_ce.detach().sum())}
    return LossTerms(loss, corruption.count + ar_count, logs)


def _training_mask(length: int, cfg: ObjectiveConfig, device: torch.device):
    use_flex = cfg.attention == "flex" or (cfg.attention == "auto" and device.type == "cuda")
    if use_flex:
        return masks.dual_stream_block_mask(length, cfg.block_size, device)
    return masks.dual_stream(length, cfg.block_size, device)


def ar_terms(model: Transformer, x0: torch.Tensor, loss_mask: torch.Tensor, cfg: ObjectiveConfig) -> LossTerms:
    rows, length = x0.shape
    positions = torch.arange(length, device=x0.device).expand(rows, length)
    hidden = model.hidden_states(x0, positions, pattern="causal")
    sel, count = ar_targets(x0, loss_mask, cfg)
    ce = F.cross_entropy(model.logits(hidden[:, :-1][sel]), x0[:, 1:][sel], reduction="sum")
    loss = cfg.ar_weight * ce
    return LossTerms(loss, count, {"ar_sum": float(ce.detach()), "ar_tokens": int(sel.sum())})


def adapter_terms(
    model: Transformer, x0: torch.Tensor, loss_mask: torch.Tensor, cfg: ObjectiveConfig, teacher: Teacher | None = None,
    phase: int = 0, revealed: torch.Tensor | None = None,
) -> LossTerms:
    """The drafting-adapter loss (:mod:`trimode.train.draft_objective`) with this config's settings,
    draft blocks starting at ``phase``, ``revealed`` slots given as tokens."""
    return draft_terms(model, x0, loss_mask, cfg.draft_settings(phase), teacher, revealed)
