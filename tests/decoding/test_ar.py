"""AR decoding: the reference goldens, batch == single, sampling, stopping, statistics."""

from __future__ import annotations

import random

import pytest
import torch

from trimode.config import preset
from trimode.decoding import ARDecoder, GenerationConfig
from trimode.model import new_model
from trimode.sampling import SamplingParams


@pytest.fixture(scope="module")
def tiny():
    return new_model(preset("tiny"), seed=1)


def test_reference_ar_goldens(nld_tiny, golden):
    """../shared/fixtures/nld-tiny ar_generate: same tokens, and our nfe equals the number of backbone
    calls the reference made (prefill included: it decides the first token, so no forward is spent
    after the last one)."""
    decoder = ARDecoder(nld_tiny.model)
    assert len(golden["ar_generate"]) == 4
    for case in golden["ar_generate"]:
        call = case["call"]
        config = GenerationConfig(max_new_tokens=call["max_new_tokens"], eos_token_ids=(call["eos_token_id"],))
        result = decoder.generate([golden["prompts"][case["prompt"]]], config)
        assert result.sequences[0] == case["new_tokens"], case["id"]
        assert result.stats.nfe == case["num_encoder_calls"], case["id"]
        expected_finish = "eos" if case["new_tokens"][-1] == call["eos_token_id"] else "length"
        assert result.finish_reasons == [expected_finish]


def test_batch_of_ragged_prompts_equals_one_by_one(nld_tiny, golden):
    decoder = ARDecoder(nld_tiny.model)
    prompts = [golden["prompts"][k] for k in ("p5", "p17", "p40", "peos")]
    config = GenerationConfig(max_new_tokens=40, eos_token_ids=(11,))
    batch = decoder.generate(prompts, config)
    for b, p in enumerate(prompts):
        single = decoder.generate([p], config)
        assert batch.sequences[b] == single.sequences[0]
        assert batch.finish_reasons[b] == single.finish_reasons[0]
    # peos stops at its EOS after 18 tokens while the others keep going
    assert batch.finish_reasons == ["length", "length", "length", "eos"]
    assert len(batch.sequences[3]) == 18


def test_batch_equals_single_random_prompts(tiny):
    rng = random.Random(0)
    decoder = ARDecoder(tiny)
    prompts = [[rng.randrange(3, 256) for _ in range(rng.randint(1, 30))] for _ in range(6)]
    config = GenerationConfig(max_new_tokens=24, eos_token_ids=(2,))
    batch = decoder.generate(prompts, config)
    for b, p in enumerate(prompts):
        assert batch.sequences[b] == decoder.generate([p], config).sequences[0]


def test_sampling_with_seeds_is_batch_invariant_and_reproducible(tiny):
    decoder = ARDecoder(tiny)
    prompts = [[5, 6, 7], [9, 10, 11, 12, 13]]
    params = SamplingParams(temperature=1.0, top_k=50, top_p=0.9)
    config = GenerationConfig(max_new_tokens=16, sampling=params, seeds=(11, 22))
    batch = decoder.generate(prompts, config)
    again = decoder.generate(prompts, config)
    assert batch.sequences == again.sequences
    for b, p in enumerate(prompts):
        single = decoder.generate([p], GenerationConfig(max_new_tokens=16, sampling=params, seeds=(config.seeds[b],)))
        assert batch.sequences[b] == single.sequences[0]
    other = decoder.generate(prompts, GenerationConfig(max_new_tokens=16, sampling=params, seeds=(12, 23)))
    assert other.sequences != batch.sequences


def test_sampling_is_not_greedy(tiny):
    """At T=1 with a flat-ish model, sampled continuations differ from the greedy one."""
    decoder = ARDecoder(tiny)
    greedy = decoder.generate([[5, 6, 7]], GenerationConfig(max_new_tokens=12)).sequences[0]
    sampled = decoder.generate(
        [[5, 6, 7]], GenerationConfig(max_new_tokens=12, sampling=SamplingParams(temperature=1.0, seed=0))
    ).sequences[0]
    assert sampled != greedy


def test_max_new_tokens_and_stop_condition(tiny):
    decoder = ARDecoder(tiny)
    result = decoder.generate([[5, 6]], GenerationConfig(max_new_tokens=7))
    assert len(result.sequences[0]) == 7 and result.finish_reasons == ["length"]
    first = result.sequences[0]
    stop_at_three = GenerationConfig(max_new_tokens=7, stop=lambda toks: len(toks) == 3)
    stopped = decoder.generate([[5, 6]], stop_at_three)
    assert stopped.sequences[0] == first[:3] and stopped.finish_reasons == ["stop"]


def test_eos_is_kept_and_ends_the_row(tiny):
    decoder = ARDecoder(tiny)
    free = decoder.generate([[5, 6]], GenerationConfig(max_new_tokens=10)).sequences[0]
    eos = free[4]
    result = decoder.generate([[5, 6]], GenerationConfig(max_new_tokens=10, eos_token_ids=(eos,)))
    cut = free.index(eos) + 1
    assert result.sequences[0] == free[:cut] and result.finish_reasons == ["eos"]


def test_statistics(tiny):
    result = ARDecoder(tiny).generate([[5, 6, 7]], GenerationConfig(max_new_tokens=9))
    s = result.stats
    assert dict(s.forwards) == {"prefill": 1, "decode": 8}  # the 9th token needs no further forward
    assert s.nfe == 9 and s.generated_tokens == 9
    assert s.tokens_per_forward == pytest.approx(1.0)
    assert s.elapsed_s > 0 and s.tokens_per_second > 0
    d = s.to_dict()
    assert d["nfe"] == 9 and d["mode"] == "ar"


@pytest.mark.parametrize("bad, match", [([[]], "empty"), ([[5, 999]], "outside the vocabulary"), ([], "no prompts")])
def test_bad_prompts_are_rejected(tiny, bad, match):
    with pytest.raises(ValueError, match=match):
        ARDecoder(tiny).generate(bad, GenerationConfig(max_new_tokens=2))


def test_bfloat16_generation_runs(tiny):
    model = new_model(preset("tiny"), seed=1, dtype=torch.bfloat16)
    result = ARDecoder(model).generate([[5, 6, 7], [8]], GenerationConfig(max_new_tokens=5))
    assert [len(s) for s in result.sequences] == [5, 5]
