"""Block diffusion decoding (the reference's ``generate``, "FastDiffuser").

Each block is [s, MASK x (B-1)] where s is the last emitted token, an AR decision (the prefill's or
the previous commit's prediction). The block is denoised bidirectionally over the cached prefix
without writing the cache (:func:`~trimode.decoding.denoise.denoise_block`), then one causal
"commit" forward over the block writes its K/V, so the cache holds exactly what AR would have
stored, and its last logit gives the next block's seed. A block thus costs (denoising steps + 1)
forwards and yields at least one AR-decided token; with block size 1 this is AR decoding.

Differences from the reference, on purpose: the mask id is never a candidate; the commit pass of
the final block (whose prediction is never used) is skipped, so our nfe (prefill counted) equals
the reference's (prefill not counted); a prefill seed that is EOS ends the row at once; EOS and
the token budget are applied per row, and a row stops denoising once what it can still emit is
known; ``max_steps`` caps the denoising steps per block (leftover masks take the last forward's
candidates). ``causal_context=False`` reproduces the reference's LLaDA-style variant: prefill and
commit passes are bidirectional and blocks start fully masked, without an AR seed.
"""

from __future__ import annotations

import torch

from .base import Batch, Decoder, ModeSettings, Row
from .denoise import denoise_block


class DiffusionDecoder(Decoder):
    mode = "diffusion"

    def denoise_adapter(self, settings: ModeSettings) -> str | None:
        """The drafting adapter for denoising forwards, on models converted with a frozen base
        (config ``denoise_adapter``); commit and prefill passes never use it, so the cache holds
        the base model's K/V, as in adapter training."""
        return self.drafting_adapter(settings) if self.model.config.denoise_adapter else None

    @staticmethod
    def _context(settings: ModeSettings) -> str:
        return "causal" if settings.causal_context else "bidirectional"

    def join(self, batch: Batch, rows: list[Row]) -> None:
        settings = batch.settings
        logits = self.prefill(batch, list(rows), self.cache_extra(settings, rows), pattern=self._context(settings))
        # Seeded blocks (causal context): slot 0 is the last emitted token, an AR decision. Without
        # causal context (LLaDA-style, the reference's causal_context=False) every slot is denoised.
        if settings.causal_context:
            self.choose(logits, list(rows))

    def step(self, batch: Batch) -> None:
        settings, rows, cache = batch.settings, batch.rows, batch.cache
        mask_id, width = self.require_mask_id(), settings.block_size
        seeded = settings.causal_context
        lead = 1 if seeded else 0
        block = torch.full((len(rows), width), mask_id, dtype=torch.long, device=self.device)
        if seeded:
            block[:, :1] = self.last_tokens(rows)
        result = denoise_block(
            self, batch, block, self.block_positions(cache, width), range(len(rows)), known=lead,
            mask_id=mask_id, threshold=settings.threshold, max_steps=settings.max_steps or width, kind="denoise",
            needed=[lead + max(row.remaining(), 0) for row in rows], adapter=self.denoise_adapter(settings),
        )
        filled = result.tokens.tolist()
        pieces: list[list[int]] = []
        for b, row in enumerate(rows):
            row.block_steps.append(result.steps[b])
            row.block_commits.append(result.commits[b])
            emitted = row.offer(filled[b][lead:])
            # The commit pass caches the seed and everything emitted (not needed once finished).
            pieces.append(filled[b][:lead] + emitted if row.active else [])
        committing = [b for b, piece in enumerate(pieces) if piece]
        if not committing:
            return
        logits = self.append(pieces, cache, pattern=self._context(settings))
        self.count(batch, "commit", [rows[b] for b in committing])
        if seeded:
            self.choose(logits, rows, committing)
