"""Autoregressive decoding: causal prefill, then one token per forward over the KV cache."""

from __future__ import annotations

import torch

from .base import Batch, Decoder, GenerationConfig


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


def greedy_ar(model: torch.nn.Module, prompt: list[int], max_new_tokens: int, eos: tuple[int, ...] = ()) -> list[int]:
    """Convenience for tests and scripts: greedy AR continuation of one prompt."""
    config = GenerationConfig(max_new_tokens=max_new_tokens, eos_token_ids=eos)
    return ARDecoder(model).generate([prompt], config).sequences[0]
