"""Autoregressive decoding: causal prefill, then one token per forward over the KV cache."""

from __future__ import annotations

import torch

from ..sampling import select
from .base import DecodeStats, Decoder, GenerationConfig


class ARDecoder(Decoder):
    mode = "ar"

    def _generate(
        self, prompts: list[list[int]], config: GenerationConfig, stats: DecodeStats
    ) -> tuple[list[list[int]], list[str]]:
        batch = len(prompts)
        cache, generators, rows = self.start(prompts, config, config.max_new_tokens + 1)
        logits = self.prefill(prompts, cache, stats)
        while True:
            next_ids = select(logits, config.sampling, generators).tolist()
            grew = [len(rows.offer(b, [next_ids[b]])) if rows.active(b) else 0 for b in range(batch)]
            if rows.done:
                break
            # Finished rows ride along (their forward is discarded and their cache not advanced)
            # so that the batch keeps one shape; the mask hides their stale slots.
            logits = self.model(self.last_tokens(rows), cache.lens[:, None], cache, pattern="causal", logits_at="last")[:, 0]
            logits = self.suppress(logits)
            cache.advance(grew)
            stats.forwards["decode"] += 1
        return rows.tokens, [str(f) for f in rows.finish]


def greedy_ar(model: torch.nn.Module, prompt: list[int], max_new_tokens: int, eos: tuple[int, ...] = ()) -> list[int]:
    """Convenience for tests and scripts: greedy AR continuation of one prompt."""
    config = GenerationConfig(max_new_tokens=max_new_tokens, eos_token_ids=eos)
    return ARDecoder(model).generate([prompt], config).sequences[0]
