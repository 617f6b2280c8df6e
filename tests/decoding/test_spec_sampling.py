"""Speculative sampling at T=1 reproduces the AR model's distribution over 3-token continuations.

Exact AR probabilities come from enumerating every prefix on a 12-token vocabulary; samples come
from thousands of rows (one seed each) of a batch. A chi-square test per pair of positions must
not reject at 0.1%; a negative control (sampling at another temperature) must be rejected, so the
test has power. Both acceptance rules are checked: the reference's exact-match rule draws fresh
verifier samples, so it is unbiased too, but it accepts fewer drafts than speculative sampling.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from conftest import tri_tiny  # pytest puts tests/ on sys.path

from trimode.decoding import decoder_for
from trimode.decoding.base import GenerationConfig
from trimode.sampling import SamplingParams

VOCAB, MASK, PROMPT, N = 12, 3, [5, 7, 9, 4], 6000


@pytest.fixture(scope="module")
def model():
    return tri_tiny(seed=0, scale=0.5, vocab_size=VOCAB, eos_token_ids=())


def next_probs(model, prefixes: list[list[int]]) -> torch.Tensor:
    with torch.no_grad():
        logits = model(torch.tensor(prefixes))[:, -1]
    logits[:, MASK] = float("-inf")  # no mode ever emits the mask id
    return logits.softmax(-1)


@pytest.fixture(scope="module")
def exact(model) -> torch.Tensor:
    """P(x1, x2, x3 | prompt) as a [V, V, V] tensor."""
    p1 = next_probs(model, [PROMPT])[0]
    pairs = [[a] for a in range(VOCAB)]
    p2 = next_probs(model, [PROMPT + a for a in pairs])
    triples = [[a, b] for a, b in itertools.product(range(VOCAB), repeat=2)]
    p3 = next_probs(model, [PROMPT + t for t in triples]).view(VOCAB, VOCAB, VOCAB)
    return p1[:, None, None] * p2[:, :, None] * p3


def chi_square_pvalue(counts: torch.Tensor, probs: torch.Tensor) -> float:
    counts, expected = counts.flatten().double(), probs.flatten().double() * counts.sum()
    keep = expected >= 5
    obs = torch.cat([counts[keep], counts[~keep].sum()[None]])
    exp = torch.cat([expected[keep], expected[~keep].sum()[None]])
    stat = ((obs - exp) ** 2 / exp.clamp_min(1e-12)).sum()
    dof = len(obs) - 1
    return float(torch.special.gammaincc(torch.tensor(dof / 2.0), stat / 2))


def sample(model, mode: str, temperature: float = 1.0, acceptance: str = "speculative", block: int = 4):
    config = GenerationConfig(
        max_new_tokens=3, block_size=block, sampling=SamplingParams(temperature=temperature),
        seeds=tuple(range(N)), acceptance=acceptance,
    )
    result = decoder_for(mode, model).generate([PROMPT] * N, config)
    counts = torch.zeros(VOCAB, VOCAB, VOCAB)
    for a, b, c in result.sequences:
        counts[a, b, c] += 1
    return counts, result.stats


@pytest.fixture(scope="module")
def speculative_draw(model):
    """The T=1 linear-spec draw of N rows: both the distribution test and the exact-match comparison
    use it, so it is drawn once (every row has its own seed, so the draw is the same either way)."""
    return sample(model, "linear-spec")


def assert_matches(counts: torch.Tensor, exact: torch.Tensor) -> None:
    assert chi_square_pvalue(counts.sum(2), exact.sum(2)) > 1e-3  # (x1, x2)
    assert chi_square_pvalue(counts.sum(0), exact.sum(0)) > 1e-3  # (x2, x3)
    assert chi_square_pvalue(counts.sum(1), exact.sum(1)) > 1e-3  # (x1, x3)


@pytest.mark.parametrize("mode", ["ar", "linear-spec", "quadratic-spec"])
def test_reproduces_ar_distribution(model, exact, mode, request):
    counts, stats = request.getfixturevalue("speculative_draw") if mode == "linear-spec" else sample(model, mode)
    assert counts.sum() == N
    assert_matches(counts, exact)
    if mode != "ar":  # drafts really were accepted, so the acceptance rule was exercised
        assert sum(a > 1 for row in stats.accepted_lengths for a in row) > N // 10


def test_exact_match_rule_is_unbiased_but_accepts_less(model, exact, speculative_draw):
    counts, stats = sample(model, "linear-spec", acceptance="exact-match")
    assert_matches(counts, exact)
    _, spec_stats = speculative_draw
    mean = lambda s: sum(sum(r) for r in s.accepted_lengths) / sum(len(r) for r in s.accepted_lengths)  # noqa: E731
    assert mean(spec_stats) > mean(stats)


def test_negative_control_has_power(model, exact):
    counts, _ = sample(model, "ar", temperature=0.8)
    assert chi_square_pvalue(counts.sum(2), exact.sum(2)) < 1e-6
