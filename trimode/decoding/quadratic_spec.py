"""Quadratic self-speculation (TiDAR-style): draft and verify in one forward per cycle.

Keep a draft D = d_0 .. d_{B-1} (d_0 = the last emitted token, uncached). One forward over the
B x (B+1) grid (:func:`trimode.masks.quadratic_grid`): row i is [d_i, MASK x B] at positions
p+i .. p+i+B. Head i is an exact causal query on d_0..d_i, so its logits verify d_{i+1}; the masks
of row i are a diffusion block conditioned on "d_0..d_i accepted". After accepting a-1 drafts plus
a bonus token, only the heads' K/V of the a kept tokens stay in the cache, and the next draft is
[bonus, predictions of row a-1's masks at the following positions]. The first draft comes out of
the prefill forward itself: a block of masks after the prompt (see :meth:`_prefill_and_draft`).

Differences from the reference (pre-release ``self_spec_generate``): the Llama-4 query scale uses
each grid token's real position (the reference scales by the flat grid index, which breaks
losslessness past ``original_max_position_embeddings``); a token is emitted as soon as it is
verified (the reference emits the bonus one cycle later), so ``accepted_lengths`` match the
reference's per-cycle counts while our last cycle may come one forward earlier (nfe counts the
prefill, which carries the bootstrap draft as in the reference); logits are only
computed for the heads and for the one row whose masks become the next draft.
"""

from __future__ import annotations

import time

import torch

from .. import masks
from ..sampling import candidates
from .base import DecodeStats, Decoder, GenerationConfig
from .speculative import accept


class QuadraticSpecDecoder(Decoder):
    mode = "quadratic-spec"

    def _generate(
        self, prompts: list[list[int]], config: GenerationConfig, stats: DecodeStats
    ) -> tuple[list[list[int]], list[str]]:
        mask_id, width, batch = self.require_mask_id(), self.require_block(config), len(prompts)
        row_len = width + 1
        grid_mask = masks.quadratic_grid(width, self.device)
        grid_offsets = masks.quadratic_grid_positions(0, width).to(self.device)
        cache, generators, rows = self.start(prompts, config, config.max_new_tokens + width * row_len + 1)
        stats.accepted_lengths = [[] for _ in range(batch)]
        draft, q = self._prefill_and_draft(prompts, cache, stats, rows, config, generators, mask_id)

        while not rows.done:
            active = rows.active_rows
            grid = torch.full((batch, width, row_len), mask_id, dtype=torch.long, device=self.device)
            grid[:, :, 0] = draft
            positions = cache.lens[:, None] + grid_offsets
            hidden = self.model.hidden_states(grid.view(batch, -1), positions, cache, pattern=grid_mask)
            stats.forwards["grid"] += 1
            hidden = hidden.view(batch, width, row_len, -1)
            head_logits = self.suppress(self.model.logits(hidden[:, :, 0]))  # [B, T, V]: head i verifies d_{i+1}
            drafted = draft.tolist()
            kept_heads: list[list[int]] = [[] for _ in range(batch)]
            next_from = [0] * batch
            for b in active:
                c, bonus = accept(
                    head_logits[b], drafted[b], None if q is None else q[b], config.sampling,
                    None if generators is None else generators[b], config.acceptance,
                )
                stats.accepted_lengths[b].append(c + 1)
                emitted = rows.offer(b, drafted[b][1 : c + 1] + [bonus])
                kept_heads[b] = [i * row_len for i in range(len(emitted))]
                next_from[b] = len(emitted) - 1
            cache.keep(kept_heads)
            if rows.done:
                break
            # Next draft: the last emitted token, then row (m-1)'s masks at the positions after it.
            source = hidden[torch.arange(batch), torch.tensor(next_from, device=self.device), 2:]
            tokens, _, probs = candidates(
                self.model.logits(source), config.sampling, generators, rows.active_rows, exclude=mask_id
            )
            draft = torch.cat([self.last_tokens(rows), tokens], 1)
            if probs is not None:
                q = torch.cat([torch.zeros_like(probs[:, :1]), probs], 1)
        return rows.tokens, [str(f) for f in rows.finish]

    def _prefill_and_draft(self, prompts, cache, stats, rows, config, generators, mask_id):
        """One forward does the prefill and the first draft: each row is [prompt, MASK x B]; the
        prompt is causal, the masks see the prompt and each other. The prompt's last logit gives
        the seed d_0 (AR), mask slots 1..B-1 give d_1..d_{B-1} (as the reference's bootstrap)."""
        start = time.perf_counter()
        batch, width = len(prompts), config.block_size
        lens = [len(p) for p in prompts]
        total = max(lens) + width
        ids = torch.full((batch, total), mask_id, dtype=torch.long)
        intra = masks.causal(total).repeat(batch, 1, 1)
        for b, p in enumerate(prompts):
            n = len(p)
            ids[b, :n] = torch.tensor(p)
            intra[b, n : n + width, : n + width] = True
        positions = torch.arange(total).expand(batch, total)
        hidden = self.model.hidden_states(ids.to(self.device), positions.to(self.device), cache, pattern=intra.to(self.device))
        stats.forwards["prefill"] += 1
        cache.advance(lens)
        index = torch.tensor([[n - 1] + list(range(n + 1, n + width)) for n in lens], device=self.device)
        logits = self.model.logits(torch.gather(hidden, 1, index[..., None].expand(-1, -1, hidden.shape[-1])))
        self.offer_seeds(self.suppress(logits[:, 0]), rows, range(batch), config, generators)
        stats.prefill_s = time.perf_counter() - start
        tokens, _, probs = candidates(logits[:, 1:], config.sampling, generators, rows.active_rows, exclude=mask_id)
        draft = torch.cat([self.last_tokens(rows), tokens], 1)
        q = None if probs is None else torch.cat([torch.zeros_like(probs[:, :1]), probs], 1)
        return draft, q
