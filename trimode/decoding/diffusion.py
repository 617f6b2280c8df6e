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

from .base import DecodeStats, Decoder, GenerationConfig
from .denoise import denoise_block


class DiffusionDecoder(Decoder):
    mode = "diffusion"

    def _generate(
        self, prompts: list[list[int]], config: GenerationConfig, stats: DecodeStats
    ) -> tuple[list[list[int]], list[str]]:
        mask_id = self.require_mask_id()
        batch, width = len(prompts), config.block_size
        context = "causal" if config.causal_context else "bidirectional"
        cache, generators, rows = self.start(prompts, config, config.max_new_tokens + width + 1)
        stats.block_steps = [[] for _ in range(batch)]
        stats.block_commits = [[] for _ in range(batch)]
        # Seeded blocks (causal context): slot 0 is the last emitted token, an AR decision. Without
        # causal context (LLaDA-style, the reference's causal_context=False) every slot is denoised.
        seeded = config.causal_context
        logits = self.prefill(prompts, cache, stats, pattern=context)
        if seeded:
            self.offer_seeds(logits, rows, range(batch), config, generators)
        lead = 1 if seeded else 0
        while not rows.done:
            active = rows.active_rows
            block = torch.full((batch, width), mask_id, dtype=torch.long, device=self.device)
            if seeded:
                block[:, :1] = self.last_tokens(rows)
            result = denoise_block(
                self.model, cache, block, self.block_positions(cache, width), active, known=lead,
                mask_id=mask_id, threshold=config.threshold, max_steps=config.max_steps or width,
                sampling=config.sampling, generators=generators, stats=stats, kind="denoise",
                needed=[lead + max(rows.remaining(b), 0) for b in range(batch)], eos=config.eos_token_ids,
            )
            filled = result.tokens.tolist()
            pieces: list[list[int]] = [[] for _ in range(batch)]
            for b in active:
                stats.block_steps[b].append(result.steps[b])
                stats.block_commits[b].append(result.commits[b])
                emitted = rows.offer(b, filled[b][lead:])
                if rows.active(b):  # the commit pass caches the seed and everything emitted
                    pieces[b] = filled[b][:lead] + emitted
            committing = [b for b in active if pieces[b]]
            if not committing:
                break
            logits = self.append(pieces, cache, pattern=context)
            stats.forwards["commit"] += 1
            if seeded:
                self.offer_seeds(logits, rows, committing, config, generators)
        return rows.tokens, [str(f) for f in rows.finish]
