"""trimode.sampling: the processed distribution (temperature, top-k, top-p) on hand-computed logits,
per-row generators, and candidate selection for denoising (the mask id never chosen)."""

from __future__ import annotations

import math

import pytest
import torch

from trimode.sampling import (
    SamplingParams,
    candidates,
    forbid,
    make_generators,
    probabilities,
    sample_from,
    select,
)


def log(*probs: float) -> torch.Tensor:
    return torch.tensor([probs]).log()


@pytest.mark.parametrize("field, value, message", [("temperature", -0.1, "temperature must be a finite number >= 0"),
                                                    ("temperature", float("nan"), "temperature must be a finite"),
                                                    ("top_p", float("nan"), r"top_p must be in \(0, 1\]"),
                                                    ("top_k", -1, "top_k must be >= 0"),
                                                    ("top_p", 0.0, r"top_p must be in \(0, 1\]"),
                                                    ("top_p", 1.5, r"top_p must be in \(0, 1\]")])
def test_invalid_settings_are_refused(field, value, message):
    with pytest.raises(ValueError, match=message):
        SamplingParams(**{field: value})


def test_greedy_is_temperature_zero():
    assert SamplingParams().greedy and not SamplingParams(temperature=0.7).greedy
    probs = probabilities(torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 0.0]]), SamplingParams())
    assert probs.tolist() == [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]  # one-hot on the argmax


def test_temperature_scales_the_logits():
    # logits [0, ln 4] at T=2 are [0, ln 2]: probabilities 1/3 and 2/3
    probs = probabilities(torch.tensor([[0.0, math.log(4.0)]]), SamplingParams(temperature=2.0))
    assert probs.tolist()[0] == pytest.approx([1 / 3, 2 / 3])
    assert probabilities(log(0.2, 0.3, 0.5), SamplingParams(temperature=1.0)).tolist()[0] == pytest.approx([0.2, 0.3, 0.5])


def test_top_k_keeps_the_k_best_renormalised():
    probs = probabilities(log(0.1, 0.2, 0.3, 0.4), SamplingParams(temperature=1.0, top_k=2))
    assert probs.tolist()[0] == pytest.approx([0.0, 0.0, 3 / 7, 4 / 7])
    same = probabilities(log(0.1, 0.2, 0.3, 0.4), SamplingParams(temperature=1.0, top_k=4))
    assert same.tolist()[0] == pytest.approx([0.1, 0.2, 0.3, 0.4])  # k >= V: no cut


@pytest.mark.parametrize("top_p, expected", [(0.45, [1.0, 0.0, 0.0]), (0.6, [0.625, 0.375, 0.0]),
                                             (0.85, [0.5, 0.3, 0.2])])
def test_top_p_keeps_the_smallest_prefix_reaching_p(top_p, expected):
    # Sorted masses 0.5, 0.3, 0.2 (given out of order); the token that crosses top_p is kept.
    probs = probabilities(log(0.3, 0.5, 0.2), SamplingParams(temperature=1.0, top_p=top_p))
    assert probs.tolist()[0] == pytest.approx([expected[1], expected[0], expected[2]])


def test_forbid():
    logits = torch.tensor([[1.0, 2.0, 3.0]])
    assert forbid(logits, None) is logits
    out = forbid(logits, 2)
    assert out.tolist() == [[1.0, 2.0, float("-inf")]] and logits[0, 2] == 3.0  # a copy


def test_one_generator_per_row():
    draw = lambda g: torch.rand(3, generator=g).tolist()  # noqa: E731
    gens = make_generators(SamplingParams(temperature=1.0, seed=5), 3)
    assert [draw(g) for g in gens] == [draw(torch.Generator().manual_seed(s)) for s in (5, 6, 7)]
    given = make_generators(SamplingParams(temperature=1.0, seed=5), 2, seeds=[11, None])
    assert draw(given[0]) == draw(torch.Generator().manual_seed(11))
    assert len(make_generators(SamplingParams(temperature=1.0), 2)) == 2  # no seed: fresh entropy


def test_select_and_sample_from():
    logits = torch.tensor([[0.0, 5.0, 1.0], [2.0, 0.0, 0.0]])
    assert select(logits, SamplingParams(), None).tolist() == [1, 0]
    with pytest.raises(ValueError, match="needs one generator per batch row"):
        select(logits, SamplingParams(temperature=1.0), None)
    # A degenerate distribution can only give its token; seeded rows are reproducible one by one.
    assert sample_from(torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]),
                       make_generators(SamplingParams(temperature=1.0, seed=0), 2)).tolist() == [2, 0]
    probs = torch.full((4, 50), 1 / 50)
    batch = sample_from(probs, make_generators(SamplingParams(temperature=1.0), 4, seeds=[1, 2, 3, 4]))
    alone = [sample_from(probs[:1], make_generators(SamplingParams(temperature=1.0), 1, seeds=[s]))[0] for s in (1, 2, 3, 4)]
    assert batch.tolist() == [int(t) for t in alone]


def test_greedy_candidates_skip_the_excluded_id_and_report_raw_confidence():
    # Slot 0: the excluded id 1 is the argmax, so token 0 is chosen; its confidence is its softmax
    # over the raw logits (mask included): 1 / (1 + 3) = 0.25.
    logits = torch.tensor([[[0.0, math.log(3.0)], [math.log(9.0), 0.0]]])
    tokens, conf, probs = candidates(logits, SamplingParams(), None, rows=[0], exclude=1)
    assert tokens.tolist() == [[0, 0]] and probs is None
    assert conf.tolist()[0] == pytest.approx([0.25, 0.9])


def test_sampled_candidates_draw_only_for_listed_rows():
    logits = torch.zeros(2, 3, 5)
    params = SamplingParams(temperature=1.0)
    gens = make_generators(params, 2, seeds=[1, 2])
    untouched = gens[1].get_state()
    tokens, conf, probs = candidates(logits, params, gens, rows=[0], exclude=4)
    assert torch.equal(gens[1].get_state(), untouched)  # row 1 consumed no random numbers
    assert probs.shape == (2, 3, 5) and probs[..., 4].eq(0).all()  # the excluded id has no mass
    assert probs[0, 0].tolist() == pytest.approx([0.25] * 4 + [0.0])
    assert (tokens[0] != 4).all() and conf[0].tolist() == pytest.approx([0.25] * 3)
    with pytest.raises(ValueError, match="needs one generator per batch row"):
        candidates(logits, params, None, rows=[0])


@pytest.mark.parametrize("params", [SamplingParams(temperature=1e-40), SamplingParams(temperature=1e-30),
                                    SamplingParams(temperature=1e-4), SamplingParams(temperature=0.7, top_p=1e-45),
                                    SamplingParams(temperature=0.7, top_p=5e-324),
                                    SamplingParams(temperature=1e-40, top_p=1e-45, top_k=1)])
def test_extreme_settings_give_a_finite_distribution_on_the_top_token(params):
    # 1/T overflowed to inf (NaN probabilities), and a top_p below float32's resolution dropped
    # every token: either poisoned the whole batch the request sampled in.
    logits = torch.tensor([[0.5, 3.0, -2.0, float("-inf")], [40.0, 39.9, -80.0, 0.0]])
    probs = probabilities(logits, params)
    assert torch.isfinite(probs).all()
    assert probs.argmax(-1).tolist() == [1, 0] and probs.sum(-1).allclose(torch.ones(2))
    gens = make_generators(params, 2, seeds=[0, 1])
    assert select(logits, params, gens).tolist() == [1, 0]
    tokens, conf, _ = candidates(logits[:, None], params, gens, rows=[0, 1])
    assert tokens[:, 0].tolist() == [1, 0] and torch.isfinite(conf).all()


def test_temperatures_below_the_float32_resolution_are_greedy():
    assert SamplingParams(temperature=1e-6).greedy and not SamplingParams(temperature=1e-4).greedy
