"""``auto`` mode: per step, linear self-speculation while few rows decode, batched AR when many.

Why per step and why these two: AR and linear self-speculation keep the same state between steps
(the cache holds the prompt and every emitted token but the last, which is the next input), so a
batch can switch between them at any step with no re-prefill, and at T = 0 both emit exactly the
causal model's argmax, so the switch never changes a greedy output. Self-speculation spends
2 x block_size tokens of compute per row and cycle to emit (accepted drafts + 1) tokens: that
wins while forwards are memory-bound (few rows), and loses once the batch makes them
compute-bound. The policy: speculate while the load (rows being decoded by the engine, all modes)
is at most ``spec_max_rows``, else AR. The crossover is measured by ``trimode bench serve-load``.
"""

from __future__ import annotations

from ..decoding.ar import ARDecoder
from ..decoding.base import Batch, Decoder, GenerationConfig
from ..decoding.linear_spec import LinearSpecDecoder
from ..model.transformer import Transformer


class AutoDecoder(Decoder):
    mode = "auto"

    def __init__(self, model: Transformer, spec_max_rows: int = 2) -> None:
        super().__init__(model)
        if spec_max_rows < 0:
            raise ValueError(f"spec_max_rows must be >= 0, got {spec_max_rows}")
        self.spec_max_rows = spec_max_rows
        self.ar, self.spec = ARDecoder(model), LinearSpecDecoder(model)

    def cache_extra(self, settings: GenerationConfig) -> int:
        return self.spec.cache_extra(settings)

    def choice(self, batch: Batch) -> Decoder:
        """The mode for the next step of this batch."""
        load = batch.load if batch.load is not None else len(batch.rows)
        can_speculate = self.model.config.mask_token_id is not None and batch.settings.block_size >= 2
        return self.spec if can_speculate and load <= self.spec_max_rows else self.ar

    def step(self, batch: Batch) -> None:
        self.choice(batch).step(batch)
