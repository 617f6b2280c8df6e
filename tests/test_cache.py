"""KV cache: append, crop/rollback, read-only forwards, ragged rows, growth."""

from __future__ import annotations

import pytest
import torch

from trimode.cache import KVCache
from trimode.config import preset
from trimode.model import new_model

TOL = 1e-5


@pytest.fixture(scope="module")
def model():
    return new_model(preset("tiny").replace(num_hidden_layers=3), seed=3)


def ids(n, seed=0, vocab=256):
    return torch.randint(0, vocab, (1, n), generator=torch.Generator().manual_seed(seed))


def test_cache_vs_full_recompute(model):
    x = ids(20)
    full = model(x)
    cache = KVCache.for_model(model, 1, 32)
    outs = []
    for t in range(20):  # one token at a time, like AR decoding
        outs.append(model(x[:, t : t + 1], cache=cache))
        cache.advance(1)
    assert (torch.cat(outs, 1) - full).abs().max() < TOL
    assert cache.lengths == [20]


def test_crop_then_reappend_equals_never_appending(model):
    x, junk = ids(12, 1), ids(5, 2)
    clean = KVCache.for_model(model, 1, 32)
    model(x[:, :8], cache=clean)
    clean.advance(8)
    ref = model(x[:, 8:], cache=clean)

    dirty = KVCache.for_model(model, 1, 32)
    model(x[:, :8], cache=dirty)
    dirty.advance(8)
    model(junk, cache=dirty)  # e.g. rejected draft tokens
    dirty.advance(5)
    dirty.crop(8)
    got = model(x[:, 8:], cache=dirty)
    assert torch.equal(got, ref) or (got - ref).abs().max() < TOL


def test_read_only_forward_leaves_cache_unchanged(model):
    x = ids(10, 4)
    cache = KVCache.for_model(model, 1, 32)
    model(x[:, :6], cache=cache)
    cache.advance(6)
    before = model(x[:, 6:], cache=cache)
    model(ids(4, 5), cache=cache, pattern="bidirectional")  # a denoising step: no advance
    assert cache.lengths == [6]
    after = model(x[:, 6:], cache=cache)
    assert (after - before).abs().max() < TOL


def test_bidirectional_block_over_cache_equals_explicit_mask(model):
    """The cached fast path and the explicit-mask path agree for a bidirectional block."""
    x = ids(10, 6)
    cache = KVCache.for_model(model, 1, 32)
    model(x[:, :6], cache=cache)
    cache.advance(6)
    fast = model(x[:, 6:], cache=cache, pattern="bidirectional")
    explicit = model(x[:, 6:], cache=cache, pattern=torch.ones(4, 4, dtype=torch.bool))
    full_mask = torch.ones(10, 10, dtype=torch.bool).tril()
    full_mask[6:, 6:] = True
    reference = model(x, pattern=full_mask)[:, 6:]
    assert (fast - explicit).abs().max() < TOL
    assert (fast - reference).abs().max() < TOL


def test_ragged_rows_match_single_rows(model):
    prompts = [ids(7, 7), ids(3, 8), ids(11, 9)]
    cache = KVCache.for_model(model, 3, 32)
    width = 11
    batch = torch.zeros(3, width, dtype=torch.long)
    for b, p in enumerate(prompts):
        batch[b, : p.shape[1]] = p[0]
    model(batch, torch.arange(width).expand(3, width), cache)
    cache.advance([p.shape[1] for p in prompts])
    step = torch.tensor([[5], [6], [7]])
    got = model(step, cache=cache)  # positions default to each row's own length
    for b, p in enumerate(prompts):
        single = KVCache.for_model(model, 1, 32)
        model(p, cache=single)
        single.advance(p.shape[1])
        ref = model(step[b : b + 1], cache=single)
        assert (got[b] - ref[0]).abs().max() < TOL


def test_per_row_crop(model):
    cache = KVCache.for_model(model, 2, 16)
    model(torch.zeros(2, 5, dtype=torch.long), cache=cache)
    cache.advance(5)
    cache.crop([5, 2])
    assert cache.lengths == [5, 2] and cache.lens.tolist() == [5, 2]
    with pytest.raises(ValueError, match="within 0..2"):
        cache.crop([5, 3])


def test_capacity_grows_and_keeps_content(model):
    x = ids(12, 10)
    cache = KVCache.for_model(model, 1, 4)
    model(x[:, :3], cache=cache)
    cache.advance(3)
    got = model(x[:, 3:], cache=cache)  # needs 12 slots: the model grows the cache
    assert cache.capacity >= 12
    assert (got - model(x)[:, 3:]).abs().max() < TOL


def test_keep_compacts_selected_tokens(model):
    """keep() retains chosen new tokens as if only they had been appended."""
    x = ids(9, 11)
    cache = KVCache.for_model(model, 1, 32)
    model(x[:, :5], cache=cache)
    cache.advance(5)
    # Forward 4 tokens where offsets 0 and 2 are the real continuation x5, x6.
    interleaved = torch.stack([x[0, 5], x[0, 8], x[0, 6], x[0, 8]])[None]
    mask = torch.tensor([[1, 0, 0, 0], [0, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.bool)
    model(interleaved, torch.tensor([[5, 6, 6, 7]]), cache, pattern=mask)
    cache.keep([[0, 2]])
    assert cache.lengths == [7]
    got = model(x[:, 7:], cache=cache)
    assert (got - model(x)[:, 7:]).abs().max() < TOL


def test_write_beyond_capacity_is_an_error():
    cache = KVCache(1, 1, 1, 4, 2)
    with pytest.raises(ValueError, match="capacity"):
        cache.write(0, torch.zeros(1, 1, 3, 4), torch.zeros(1, 1, 3, 4))


def test_rows_join_and_leave_between_forwards(model):
    """add_rows/remove_rows: each remaining row continues exactly as it would alone."""
    prompts = [ids(n, 20 + n) for n in (5, 9, 3, 7)]

    def prefilled(p):
        cache = KVCache.for_model(model, 1, 16)
        model(p, cache=cache)
        cache.advance(p.shape[1])
        return cache

    cache = prefilled(prompts[0])
    for p in prompts[1:]:
        cache.add_rows(prefilled(p))  # grows the row slots and the capacity as needed
    assert cache.lengths == [5, 9, 3, 7] and cache.slots >= 4
    order = cache.remove_rows([0, 2])
    assert order == [3, 1] and cache.lengths == [7, 9]  # the last row moved into the first hole
    step = torch.tensor([[11], [12]])
    got = model(step, cache=cache)
    for b, src in enumerate(order):
        ref = model(step[b : b + 1], cache=prefilled(prompts[src]))
        assert (got[b] - ref[0]).abs().max() < TOL
    with pytest.raises(ValueError, match="within 0..1"):
        cache.remove_rows([2])
