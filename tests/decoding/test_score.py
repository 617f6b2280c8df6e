"""Verifier scores: the causal model's log-probabilities of each token, as one full forward gives
them, whatever the chunking; the adapter plays no part."""

from __future__ import annotations

import pytest
import torch
from conftest import tri_tiny

import trimode.decoding.score as score_module
from trimode.decoding.score import score
from trimode.model import DRAFT_ADAPTER


@pytest.fixture(scope="module")
def model():
    return tri_tiny(seed=4)


def reference(model, tokens):
    """log p(tokens[i] | tokens[:i]) for i >= 1 and the full distributions, from a plain forward."""
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([tokens]))[0].float(), -1)
    return [float(logp[i - 1, tokens[i]]) for i in range(1, len(tokens))], logp


def test_scores_match_a_full_causal_forward_and_the_top_k_is_sorted(model):
    tokens = [5, 9, 17, 4, 60, 33, 12, 12, 70]
    want, logp = reference(model, tokens)
    got = score(model, tokens, top=3)
    assert got.logprobs[0] is None and got.top[0] == []
    assert got.logprobs[1:] == pytest.approx(want, abs=1e-5)
    for i, alternatives in enumerate(got.top[1:], start=1):
        values = [v for _, v in alternatives]
        assert values == sorted(values, reverse=True) and len(values) == 3
        assert [t for t, _ in alternatives] == logp[i - 1].topk(3).indices.tolist()
    assert got.total() == pytest.approx(sum(want), abs=1e-4)


def test_start_scores_only_the_continuation(model):
    tokens = [5, 9, 17, 4, 60, 33]
    full = score(model, tokens)
    tail = score(model, tokens, start=4)
    assert tail.scored == [60, 33] and tail.logprobs == pytest.approx(full.logprobs[4:], abs=1e-6)
    assert tail.top == [[], []]
    assert score(model, tokens, start=len(tokens)).logprobs == []


def test_chunked_projection_equals_one_chunk(model, monkeypatch):
    tokens = list(range(4, 40))
    whole = score(model, tokens, top=2)
    monkeypatch.setattr(score_module, "CHUNK", 5)
    parts = score(model, tokens, top=2)
    assert parts.logprobs[1:] == pytest.approx(whole.logprobs[1:], abs=1e-6)
    assert [[t for t, _ in x] for x in parts.top] == [[t for t, _ in x] for x in whole.top]


def test_the_drafting_adapter_never_enters_the_scores(model):
    assert DRAFT_ADAPTER in model.adapter_names
    tokens = [5, 9, 17, 4]
    want, _ = reference(model, tokens)  # a plain forward: no adapter
    with torch.no_grad():
        drafted = torch.log_softmax(model(torch.tensor([tokens]), adapter=DRAFT_ADAPTER)[0], -1)
    assert float(drafted[0, 9]) != pytest.approx(want[0], abs=1e-4)  # the adapter would change them
    assert score(model, tokens).logprobs[1:] == pytest.approx(want, abs=1e-5)


@pytest.mark.parametrize("tokens, start, top, words", [
    ([], 0, 0, "empty"), ([5, 6], 3, 0, "start must be in [0, 2]"), ([5, 6], 0, -1, "top must be in [0, 96]"),
])
def test_bad_arguments_are_named(model, tokens, start, top, words):
    with pytest.raises(ValueError, match=words.replace("[", r"\[").replace("]", r"\]")):
        score(model, tokens, start, top)
