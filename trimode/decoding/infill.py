"""Infilling: a middle of N tokens between a prefix and a suffix, filled by denoising.

Layout. Each prefix is prefilled causally into the cache. The middle is denoised left to right in
chunks of at most ``chunk`` masks. A chunk's block is [MASK x c, suffix window]: the masks at the
positions after what is cached, then the first ``window`` suffix tokens at their own positions
(after the whole middle) as given slots. Given slots run adapter-off and see the masks both ways,
and they are never written to the cache. The chunk is denoised like a diffusion block (its most
confident slot plus every slot over the threshold per forward). Then one causal forward commits it
(its K/V written, adapter off, exactly what AR would cache), so the next chunk reads it as context.
When the whole middle fits one chunk, the middle and the suffix window form one block. A
block-causal model reads the suffix natively there: a mask sees its own block in both directions.
That is the pattern the drafting adapter trains on with ``--draft-reveal``: scattered slots given
as tokens among masks. A longer middle spans several chunks. With ``placement="every"``, every
chunk sees the suffix window across the gap to the suffix's positions. With ``"last"``, only the
final chunk, which is adjacent to the suffix, sees it, and the earlier chunks are plain diffusion
blocks.

Counting: the middle's N tokens per row are the generated tokens; forwards are the prefill, every
denoising forward, and the commits between chunks, each over the whole batch counted once. Rows
with different suffix window lengths decode in separate batches, so a row's tokens never depend on
its batch.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from ..model.transformer import Transformer
from .base import DecodeStats, GenerationConfig, Row
from .denoise import denoise_block
from .diffusion import DiffusionDecoder

PLACEMENTS = ("every", "last")


@dataclass
class InfillResult:
    middles: list[list[int]]  # per row, the N middle tokens
    stats: DecodeStats


@dataclass(frozen=True)
class InfillLayout:
    """Where the middle's masks and the suffix go (see the module docstring). ``window`` suffix
    tokens are read (None: half the block); ``chunk`` masks are denoised at a time (None: what is
    left of the block after the window, at least 1)."""

    window: int | None = None
    chunk: int | None = None
    placement: str = "every"

    def resolve(self, block_size: int) -> tuple[int, int]:
        if self.placement not in PLACEMENTS:
            raise ValueError(f"infill placement must be one of {PLACEMENTS}, got {self.placement!r}")
        window = block_size // 2 if self.window is None else self.window
        chunk = max(block_size - window, 1) if self.chunk is None else self.chunk
        if window < 0 or chunk < 1:
            raise ValueError(f"infill needs window >= 0 and chunk >= 1, got window {window}, chunk {chunk}")
        return window, chunk


def infill(
    model: Transformer,
    prefixes: Sequence[Sequence[int]],
    suffixes: Sequence[Sequence[int]],
    config: GenerationConfig,
    layout: InfillLayout = InfillLayout(),
) -> InfillResult:
    """Fill ``config.max_new_tokens`` middle tokens between each prefix and suffix (see the module
    docstring); ``config`` gives the block size, threshold, step budget per chunk and sampling."""
    if len(prefixes) != len(suffixes):
        raise ValueError(f"{len(prefixes)} prefixes and {len(suffixes)} suffixes: give one suffix per prefix")
    decoder = DiffusionDecoder(model)
    for i, p in enumerate(prefixes):
        decoder.check_prompt(p, f"prefix {i}")
    for i, s in enumerate(suffixes):
        if s:
            decoder.check_prompt(s, f"suffix {i}")
    window, chunk = layout.resolve(config.block_size)
    # Every middle slot is filled: an EOS, a stop or a forced token does not end the middle.
    config = replace(config, eos_token_ids=(), stop=None, force=None)
    stats = DecodeStats(mode="infill")
    middles: list[list[int]] = [[] for _ in prefixes]
    rows_out: list[Row | None] = [None] * len(prefixes)
    groups: dict[int, list[int]] = {}
    for i, s in enumerate(suffixes):
        groups.setdefault(min(len(s), window), []).append(i)
    start = time.perf_counter()
    with torch.inference_mode():
        for shown, members in sorted(groups.items()):
            rows = [Row(prefixes[i], config, i) for i in members]
            batch = _infill_group(decoder, rows, [list(suffixes[i][:shown]) for i in members], config, chunk,
                                  layout.placement)
            for i, row in zip(members, rows):
                middles[i], rows_out[i] = row.tokens, row
            stats.forwards.update(batch.stats.forwards)
            stats.prefill_s += batch.stats.prefill_s
    stats.elapsed_s = time.perf_counter() - start
    stats.tokens_per_row = [len(m) for m in middles]
    stats.generated_tokens = sum(stats.tokens_per_row)
    stats.block_steps = [r.block_steps for r in rows_out]
    stats.block_commits = [r.block_commits for r in rows_out]
    return InfillResult(middles, stats)


def _infill_group(decoder: DiffusionDecoder, rows: list[Row], shown: list[list[int]], config: GenerationConfig,
                  chunk: int, placement: str):
    """Infill rows whose suffix windows have the same length; returns their batch (for its stats)."""
    settings, n, device = config.settings, config.max_new_tokens, decoder.device
    mask_id = decoder.require_mask_id()
    batch = decoder.open(settings)
    decoder.prefill(batch, rows, n + 1)
    cache, k = batch.cache, len(shown[0])
    filled = 0
    while filled < n:
        c = min(chunk, n - filled)
        see = k if placement == "every" or filled + c == n else 0
        block = torch.full((len(rows), c + see), mask_id, dtype=torch.long, device=device)
        if see:
            block[:, c:] = torch.tensor(shown, dtype=torch.long, device=device)
        offsets = torch.cat([torch.arange(c), n - filled + torch.arange(see)]).to(device)
        given = torch.zeros_like(block, dtype=torch.bool)
        given[:, c:] = True
        result = denoise_block(
            decoder, batch, block, cache.lens[:, None] + offsets, range(len(rows)), known=0, mask_id=mask_id,
            threshold=settings.threshold, max_steps=settings.max_steps or c, kind="denoise",
            needed=[c + see] * len(rows), adapter=decoder.denoise_adapter(settings), given=given,
        )
        pieces = result.tokens[:, :c].tolist()
        for b, row in enumerate(rows):
            row.tokens += pieces[b]
            row.block_steps.append(result.steps[b])
            row.block_commits.append(result.commits[b])
        filled += c
        if filled < n:
            decoder.append(pieces, cache)
            decoder.count(batch, "commit", rows)
    return batch
