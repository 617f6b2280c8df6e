"""Revision: the least confident tokens are the ones re-masked, a lone re-masked token takes the
argmax of a hand-made block forward, nothing else moves, and the counts and confidences add up."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import tri_tiny
from trimode import masks
from trimode.cache import KVCache
from trimode.decoding import GenerationConfig
from trimode.decoding.revise import confidences, revise
from trimode.model import DRAFT_ADAPTER

CONTEXT = [5, 9, 14]
TEXT = [20, 7, 33, 41, 8, 60, 12, 19, 44, 50, 61, 70, 15, 16, 17, 18, 25, 26]


def _model():
    return tri_tiny(seed=4, adapter_scope="masks", denoise_adapter=True)


def test_the_least_confident_tokens_are_re_masked_and_nothing_else_moves():
    model = _model()
    with torch.no_grad():
        conf = confidences(model, CONTEXT + TEXT)[len(CONTEXT):]
    r = revise(model, CONTEXT, TEXT, GenerationConfig(block_size=4), rounds=1, per_round=3)
    assert r.remasked[0] == sorted(sorted(range(len(TEXT)), key=lambda j: conf[j])[:3])
    assert all(r.tokens[j] == TEXT[j] for j in range(len(TEXT)) if j not in r.remasked[0])
    for ch in r.rounds[0]:
        assert ch.old == TEXT[ch.position] and ch.new == r.tokens[ch.position] and ch.before == pytest.approx(conf[ch.position])
        assert ch.after == pytest.approx(r.confidence[ch.position])  # the final scoring pass
    with torch.no_grad():
        assert r.confidence == pytest.approx(confidences(model, CONTEXT + r.tokens)[len(CONTEXT):])


def test_a_lone_re_masked_token_takes_the_argmax_of_its_block_forward():
    """Threshold None, one step: the masked slot reads its block's other tokens both ways (adapter off
    there, on at the mask) over the cached context and text before the block."""
    model = _model()
    r = revise(model, CONTEXT, TEXT, GenerationConfig(block_size=4, threshold=None, max_steps=1), per_round=1)
    (j,) = r.remasked[0]
    lo = j - j % 4
    block = torch.tensor([TEXT[lo:lo + 4]])  # the last block may be shorter
    w = block.shape[1]
    block[0, j - lo] = 3
    cache = KVCache.for_model(model, 1, 64)
    with torch.no_grad():
        model(torch.tensor([CONTEXT + TEXT[:lo]]), cache=cache)
        cache.advance(len(CONTEXT) + lo)
        gate = block == 3
        logits = model(block, (len(CONTEXT) + lo + torch.arange(w))[None], cache,
                       pattern=masks.known_then_block(w, 0), adapter=DRAFT_ADAPTER, adapter_gate=gate)
    logits[..., 3] = float("-inf")
    assert r.tokens[j] == int(logits[0, j - lo].argmax())


def test_rounds_cost_a_scoring_pass_each_and_commits_between_masked_blocks():
    model = _model()
    r = revise(model, CONTEXT, TEXT, GenerationConfig(block_size=4), rounds=3, per_round=4)
    f = r.stats.forwards
    assert f["score"] == 4 and len(r.remasked) == len(r.rounds) == 3
    blocks = [len({j // 4 for j in chosen}) for chosen in r.remasked]
    assert f["commit"] == sum(n - 1 for n in blocks) and f["denoise"] >= sum(blocks)
    assert r.stats.generated_tokens == sum(len(c) for c in r.rounds)


def test_without_context_the_first_token_is_kept_and_bad_input_is_refused():
    model = _model()
    r = revise(model, [], TEXT[:6], GenerationConfig(block_size=4), per_round=5)
    assert 0 not in r.remasked[0] and r.tokens[0] == TEXT[0] and r.confidence[0] is None
    with pytest.raises(ValueError, match="text is empty"):
        revise(model, CONTEXT, [], GenerationConfig(block_size=4))
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        revise(model, CONTEXT, TEXT, GenerationConfig(block_size=4), rounds=0)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        revise(model, CONTEXT, [5, 400], GenerationConfig(block_size=4))
