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
from ..cache import KVCache
from .base import Batch, Decoder, ModeSettings, Row
from .denoise import row_candidates
from .speculative import accept


class QuadraticSpecDecoder(Decoder):
    mode = "quadratic-spec"

    def step(self, batch: Batch) -> None:
        rows, cache = batch.rows, batch.cache
        mask_id, width, n = self.require_mask_id(), batch.settings.block_size, len(batch.rows)
        row_len = width + 1
        grid = torch.full((n, width, row_len), mask_id, dtype=torch.long, device=self.device)
        grid[:, :, 0] = torch.tensor([row.draft[0] for row in rows], device=self.device)
        positions = cache.lens[:, None] + masks.quadratic_grid_positions(0, width).to(self.device)
        grid_mask = masks.quadratic_grid(width, self.device)
        adapter = self.mask_adapter(batch.settings)
        gate = None
        if adapter is not None:  # the masks draft with the adapter; the heads verify without it
            gate = torch.ones(n, width, row_len, dtype=torch.bool, device=self.device)
            gate[:, :, 0] = False
            gate = gate.view(n, -1)
        hidden = self.model.hidden_states(grid.view(n, -1), positions, cache, pattern=grid_mask, adapter=adapter,
                                          adapter_gate=gate)
        self.count(batch, "grid", rows)
        hidden = hidden.view(n, width, row_len, -1)
        head_logits = self.suppress(self.model.logits(hidden[:, :, 0]))  # [B, T, V]: head i verifies d_{i+1}
        kept_heads: list[list[int]] = []
        next_from = []
        for b, row in enumerate(rows):
            draft, q = row.draft
            c, bonus = accept(head_logits[b], draft, q, row.config.sampling, row.generator, row.config.acceptance)
            row.accepted_lengths.append(c + 1)
            emitted = row.offer(draft[1 : c + 1] + [bonus])
            kept_heads.append([i * row_len for i in range(len(emitted))])
            next_from.append(len(emitted) - 1)
        cache.keep(kept_heads)
        active = [b for b, row in enumerate(rows) if row.active]
        if active:
            # Next draft: the last emitted token, then row (m-1)'s masks at the positions after it.
            source = hidden[torch.arange(n), torch.tensor(next_from, device=self.device), 2:]
            self._set_drafts(rows, active, self.model.logits(source), mask_id)

    def join(self, batch: Batch, rows: list[Row]) -> None:
        """One forward does the prefill and the first draft: each row is [prompt, MASK x B]; the
        prompt is causal, the masks see the prompt and each other. The prompt's last logit gives
        the seed d_0 (AR), mask slots 1..B-1 give d_1..d_{B-1} (as the reference's bootstrap)."""
        start = time.perf_counter()
        mask_id, width = self.require_mask_id(), batch.settings.block_size
        lens = [len(r.prompt) for r in rows]
        total = max(lens) + width
        cache = KVCache.for_model(self.model, len(rows), max(lens) + self.cache_extra(batch.settings, rows))
        ids = torch.full((len(rows), total), mask_id, dtype=torch.long)
        intra = masks.causal(total).repeat(len(rows), 1, 1)
        gate = torch.zeros(len(rows), total, dtype=torch.bool)
        for b, (row, n) in enumerate(zip(rows, lens)):
            ids[b, :n] = torch.tensor(row.prompt)
            intra[b, n : n + width, : n + width] = True
            gate[b, n:] = True
        positions = torch.arange(total).expand(len(rows), total)
        adapter = self.mask_adapter(batch.settings)
        hidden = self.model.hidden_states(ids.to(self.device), positions.to(self.device), cache, pattern=intra.to(self.device),
                                          adapter=adapter, adapter_gate=gate.to(self.device) if adapter else None)
        cache.advance(lens)
        index = torch.tensor([[n - 1] + list(range(n + 1, n + width)) for n in lens], device=self.device)
        logits = self.model.logits(torch.gather(hidden, 1, index[..., None].expand(-1, -1, hidden.shape[-1])))
        self.choose(self.suppress(logits[:, 0]), rows)
        batch.attach(rows, cache)
        self.count(batch, "prefill", rows)
        batch.stats.prefill_s += time.perf_counter() - start
        self._set_drafts(rows, [b for b, row in enumerate(rows) if row.active], logits[:, 1:], mask_id)

    def mask_adapter(self, settings: ModeSettings) -> str | None:
        """The drafting adapter, for the grid's mask slots, when it is scoped to masks: an adapter
        trained on whole draft blocks (the published one) has never seen adapter-off heads."""
        return self.drafting_adapter(settings) if self.model.config.adapter_scope == "masks" else None

    def _set_drafts(self, rows: list[Row], which: list[int], logits: torch.Tensor, mask_id: int) -> None:
        """row.draft = (draft [last emitted token, B-1 drafted tokens], their distributions q or None)."""
        tokens, _, probs = row_candidates(logits, rows, which, exclude=mask_id)
        drafted = tokens.tolist()
        for b in which:
            q = None
            if probs is not None and not rows[b].config.sampling.greedy:
                q = torch.cat([torch.zeros_like(probs[b, :1]), probs[b]], 0)
            rows[b].draft = ([rows[b].last()] + drafted[b], q)
