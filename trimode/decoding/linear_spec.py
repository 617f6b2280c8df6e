"""Linear self-speculation (the reference's ``linear_spec_generate``).

Each cycle: (a) draft: the block [s, MASK x (B-1)] (s = last emitted token) is denoised
bidirectionally with the drafting adapter on and the cache read-only (one forward at draft
threshold 0, several with iterative drafting); (b) verify: one causal forward, adapter off, over
[s, d_1 .. d_{B-1}] writes the cache; (c) accept the longest verified prefix plus one bonus token
(:func:`~trimode.decoding.speculative.accept`); (d) roll the cache back to what was emitted, the
last emitted token staying uncached as the next seed. At T = 0 every emitted token is the causal
model's argmax: the output equals greedy AR.

Differences from the reference, on purpose: the last cycle is clipped to ``max_new_tokens`` (the
reference can return up to B-1 extra tokens); the mask id is never drafted; T > 0 uses speculative
sampling (``acceptance="speculative"``) unless ``"exact-match"`` asks for the reference's rule.
``accepted_lengths`` records matched drafts + 1 per cycle, before any EOS or length cut, like the
reference's ``accepted``.
"""

from __future__ import annotations

import torch

from .base import Batch, Decoder
from .denoise import denoise_block
from .speculative import accept


class LinearSpecDecoder(Decoder):
    mode = "linear-spec"

    def step(self, batch: Batch) -> None:
        settings, rows, cache = batch.settings, batch.rows, batch.cache
        mask_id, width = self.require_mask_id(), settings.block_size
        adapter = self.drafting_adapter(settings)
        block = torch.full((len(rows), width), mask_id, dtype=torch.long, device=self.device)
        block[:, :1] = self.last_tokens(rows)
        positions = self.block_positions(cache, width)
        draft = denoise_block(
            self, batch, block, positions, range(len(rows)), known=1, mask_id=mask_id,
            threshold=settings.draft_threshold, max_steps=width, kind="draft", adapter=adapter,
        )
        logits = self.suppress(self.model(draft.tokens, positions, cache, pattern="causal"))
        self.count(batch, "verify", rows)
        drafted = draft.tokens.tolist()
        kept = []
        for b, row in enumerate(rows):
            c, bonus = accept(
                logits[b], drafted[b], None if draft.q is None else draft.q[b], row.config.sampling,
                row.generator, row.config.acceptance,
            )
            row.accepted_lengths.append(c + 1)
            kept.append(len(row.offer(drafted[b][1 : c + 1] + [bonus])))
        # The verify pass wrote all B slots; keep the seed and the emitted tokens but the last.
        cache.advance(kept)
