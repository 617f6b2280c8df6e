"""Autoregressive decoding: causal prefill, then one token per forward over the KV cache."""

from __future__ import annotations

from .base import Batch, Decoder


class ARDecoder(Decoder):
    mode = "ar"

    def step(self, batch: Batch) -> None:
        # Invariant shared with linear self-speculation: the cache holds the prompt and every
        # emitted token but the last, which is the next forward's input.
        rows, cache = batch.rows, batch.cache
        logits = self.model(self.last_tokens(rows), cache.lens[:, None], cache, pattern="causal", logits_at="last")
        self.count(batch, "decode", rows)
        cache.advance(1)
        self.choose(self.suppress(logits[:, 0]), rows)

