"""Infilling: the layout checked against hand-made forwards, the suffix read or not as the layout
says, the same middle in a batch and alone, and the counts."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import tri_tiny
from trimode import masks
from trimode.cache import KVCache
from trimode.decoding import GenerationConfig
from trimode.decoding.infill import InfillLayout, infill
from trimode.model import DRAFT_ADAPTER

PREFIX = [5, 9, 14, 20, 7]
SUFFIX = [30, 31, 40, 41, 50]


def _model():
    return tri_tiny(seed=4, adapter_scope="masks", denoise_adapter=True)


def test_one_forward_fills_the_middle_from_the_prefix_and_the_suffix_window():
    """Threshold None with one step per chunk: each mask takes the argmax of a single forward over
    [MASK x 3, the first 2 suffix tokens at their own positions] after the cached prefix, the adapter
    on the masks only."""
    model = _model()
    n, window = 3, 2
    config = GenerationConfig(max_new_tokens=n, block_size=8, threshold=None, max_steps=1)
    got = infill(model, [PREFIX], [SUFFIX], config, InfillLayout(window=window, chunk=n)).middles[0]
    cache = KVCache.for_model(model, 1, 32)
    with torch.no_grad():
        model(torch.tensor([PREFIX]), cache=cache)
        cache.advance(len(PREFIX))
        block = torch.tensor([[3] * n + SUFFIX[:window]])
        positions = len(PREFIX) + torch.arange(n + window)[None]
        gate = torch.tensor([[True] * n + [False] * window])
        logits = model(block, positions, cache, pattern=masks.known_then_block(n + window, 0), adapter=DRAFT_ADAPTER,
                       adapter_gate=gate)
    logits[..., 3] = float("-inf")  # the mask id is never a candidate
    assert got == logits[0, :n].argmax(-1).tolist()


def test_the_suffix_is_read_only_through_its_window():
    model = _model()
    config = GenerationConfig(max_new_tokens=4, block_size=8)
    other = [60, 61, 62, 63, 64]
    seen = [infill(model, [PREFIX], [s], config, InfillLayout(window=3)).middles[0] for s in (SUFFIX, other)]
    assert seen[0] != seen[1]
    blind = [infill(model, [PREFIX], [s], config, InfillLayout(window=0)).middles[0] for s in (SUFFIX, other)]
    assert blind[0] == blind[1]
    # Past the window the suffix is not read: only its first 3 tokens matter.
    assert infill(model, [PREFIX], [SUFFIX[:3] + [70, 71]], config, InfillLayout(window=3)).middles[0] == seen[0]


def test_placement_matters_only_when_the_middle_spans_chunks():
    model = _model()
    config = GenerationConfig(max_new_tokens=3, block_size=8)
    one = [infill(model, [PREFIX], [SUFFIX], config, InfillLayout(window=2, chunk=4, placement=p)).middles[0]
           for p in ("every", "last")]
    assert one[0] == one[1]
    long = GenerationConfig(max_new_tokens=9, block_size=8)
    runs = {p: infill(model, [PREFIX], [SUFFIX], long, InfillLayout(window=2, chunk=4, placement=p)) for p in ("every", "last")}
    assert runs["every"].middles[0] != runs["last"].middles[0]
    for r in runs.values():  # chunks of 4, 4, 1; a causal commit between chunks
        assert len(r.middles[0]) == 9 and r.stats.forwards["commit"] == 2 and r.stats.forwards["prefill"] == 1
        assert r.stats.forwards["denoise"] == sum(r.stats.block_steps[0])
        assert sum(map(sum, r.stats.block_commits[0])) == 9


def test_a_batch_gives_each_row_its_middle_alone():
    model = _model()
    prefixes = [PREFIX, [8, 8, 9], [11, 12, 13, 14, 15, 16, 17, 18], [6, 7]]
    suffixes = [SUFFIX, [33], [], [40, 41, 42, 43]]
    config = GenerationConfig(max_new_tokens=7, block_size=8)
    layout = InfillLayout(window=3, chunk=4)
    together = infill(model, prefixes, suffixes, config, layout)
    for p, s, m in zip(prefixes, suffixes, together.middles):
        assert infill(model, [p], [s], config, layout).middles[0] == m
    assert together.stats.generated_tokens == 4 * 7 and together.stats.tokens_per_row == [7] * 4


def test_bad_requests_name_what_is_wrong():
    model = _model()
    config = GenerationConfig(max_new_tokens=3, block_size=8)
    with pytest.raises(ValueError, match="one suffix per prefix"):
        infill(model, [PREFIX], [SUFFIX, SUFFIX], config)
    with pytest.raises(ValueError, match="prefix 0 is empty"):
        infill(model, [[]], [SUFFIX], config)
    with pytest.raises(ValueError, match="placement"):
        infill(model, [PREFIX], [SUFFIX], config, InfillLayout(placement="middle"))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        infill(model, [PREFIX], [[500]], config)
