"""``auto`` mode: per step, linear self-speculation while few rows decode, batched AR when many.

Why per step and why these two: AR and linear self-speculation keep the same state between steps
(the cache holds the prompt and every emitted token but the last, which is the next input), so a
batch can switch between them at any step with no re-prefill, and at T = 0 both emit exactly the
causal model's argmax, so the switch never changes a greedy output. Self-speculation spends
2 x block_size tokens of compute per row and cycle to emit (accepted drafts + 1) tokens: that
wins while forwards are memory-bound (few rows), and loses once the batch makes them
compute-bound. The policy: AR while the load (rows being decoded or waiting in the engine, all
modes) exceeds ``spec_max_rows``. At or below it, speculation must also pay on *this* model: each
step is timed, an exponential average of emitted tokens per second is kept for both modes at low
load, and the faster one is used, the other re-measured every ``probe_every`` steps (speculation
is tried first). So a model whose drafts are rarely accepted (e.g. an untrained drafter) falls
back to AR by itself. The crossover is measured by ``trimode bench serve-load``.
"""

from __future__ import annotations

import time

from ..decoding.ar import ARDecoder
from ..decoding.base import Batch, Decoder
from ..decoding.linear_spec import LinearSpecDecoder
from ..model.transformer import Transformer


class AutoDecoder(Decoder):
    mode = "auto"

    def __init__(self, model: Transformer, spec_max_rows: int = 2, probe_every: int = 64, smoothing: float = 0.2) -> None:
        super().__init__(model)
        if spec_max_rows < 0 or probe_every < 2 or not 0 < smoothing <= 1:
            raise ValueError(
                f"need spec_max_rows >= 0, probe_every >= 2, 0 < smoothing <= 1; got {spec_max_rows}, "
                f"{probe_every}, {smoothing}"
            )
        self.spec_max_rows, self.probe_every, self.smoothing = spec_max_rows, probe_every, smoothing
        self.ar, self.spec = ARDecoder(model), LinearSpecDecoder(model)
        self.rate: dict[str, float] = {}  # mode -> averaged emitted tokens/s at low load
        self.low_steps = 0

    def choice(self, batch: Batch) -> Decoder:
        """The mode for the next step of this batch."""
        load = batch.demand if batch.demand is not None else len(batch.rows)
        can_speculate = self.model.config.mask_token_id is not None and batch.settings.block_size >= 2
        if not can_speculate or load > self.spec_max_rows:
            return self.ar
        spec, ar = self.rate.get(self.spec.mode), self.rate.get(self.ar.mode)
        if spec is None:
            return self.spec
        if ar is None:
            return self.ar
        best, other = (self.spec, self.ar) if spec >= ar else (self.ar, self.spec)
        return other if self.low_steps % self.probe_every == 0 else best

    def step(self, batch: Batch) -> None:
        decoder = self.choice(batch)
        low = decoder is self.spec or (batch.demand or len(batch.rows)) <= self.spec_max_rows
        before = sum(len(r.tokens) for r in batch.rows)
        start = time.perf_counter()
        decoder.step(batch)
        if low:
            rate = (sum(len(r.tokens) for r in batch.rows) - before) / max(time.perf_counter() - start, 1e-9)
            old = self.rate.get(decoder.mode)
            self.rate[decoder.mode] = rate if old is None else old + self.smoothing * (rate - old)
            self.low_steps += 1
