"""Property tests over many random prompts on tiny models: self-speculation is lossless at T=0,
diffusion with block size 1 is AR, and a batch gives each row what it gets alone."""

from __future__ import annotations

import pytest
from conftest import random_prompts, tri_tiny  # pytest puts tests/ on sys.path

from trimode.decoding import decoder_for
from trimode.decoding.base import GenerationConfig
from trimode.sampling import SamplingParams

EOS = 2


@pytest.fixture(scope="module")
def model():
    return tri_tiny(seed=0)


def ar_reference(model, prompts, max_new=40, **kw):
    config = GenerationConfig(max_new_tokens=max_new, eos_token_ids=(EOS,), **kw)
    return [decoder_for("ar", model).generate([p], config).sequences[0] for p in prompts]


@pytest.mark.parametrize(
    "mode, block, adapter",
    [
        ("linear-spec", 2, True),
        ("linear-spec", 3, False),
        ("linear-spec", 8, True),
        ("linear-spec", 32, True),
        ("quadratic-spec", 2, False),
        ("quadratic-spec", 5, False),
        ("quadratic-spec", 8, False),
    ],
)
def test_greedy_self_speculation_equals_greedy_ar(model, mode, block, adapter):
    prompts = random_prompts(12, seed=block)
    expected = ar_reference(model, prompts)
    config = GenerationConfig(max_new_tokens=40, eos_token_ids=(EOS,), block_size=block, use_adapter=adapter)
    decoder = decoder_for(mode, model)
    accepted = []
    for p, want in zip(prompts, expected):
        result = decoder.generate([p], config)
        assert result.sequences[0] == want
        accepted += result.stats.accepted_lengths[0]
    assert max(accepted) <= block


def test_some_drafts_are_accepted(nld_tiny, golden):
    """Guard that losslessness is not vacuous: on the fixture, cycles accept several drafts."""
    config = GenerationConfig(max_new_tokens=64, eos_token_ids=(11,), block_size=8)
    for mode in ("linear-spec", "quadratic-spec"):
        stats = decoder_for(mode, nld_tiny.model).generate([golden["prompts"]["p5"]], config).stats
        assert max(stats.accepted_lengths[0]) >= 6
        # One forward per cycle: the quadratic mode beats one token per forward even on this model.
        assert mode == "linear-spec" or stats.tokens_per_forward > 1.5


def test_speculation_on_the_fixture_model_with_random_prompts(nld_tiny):
    prompts = random_prompts(8, seed=99, vocab=512)
    prompts = [[t if t != 100 else 101 for t in p] for p in prompts]
    config = GenerationConfig(max_new_tokens=48, eos_token_ids=(11,), block_size=8)
    for p in prompts:
        want = decoder_for("ar", nld_tiny.model).generate([p], config).sequences[0]
        for mode in ("linear-spec", "quadratic-spec"):
            assert decoder_for(mode, nld_tiny.model).generate([p], config).sequences[0] == want


@pytest.mark.parametrize("threshold", [0.9, None])
def test_diffusion_with_block_size_one_is_ar(model, threshold):
    prompts = random_prompts(10, seed=5)
    expected = ar_reference(model, prompts)
    config = GenerationConfig(max_new_tokens=40, eos_token_ids=(EOS,), block_size=1, threshold=threshold)
    for p, want in zip(prompts, expected):
        result = decoder_for("diffusion", model).generate([p], config)
        assert result.sequences[0] == want
        assert result.stats.forwards["denoise"] == 0
        assert result.stats.nfe == len(want)  # one forward per token, as AR


MODES = ["ar", "diffusion", "linear-spec", "quadratic-spec"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_batch_equals_single(model, mode, temperature):
    prompts = random_prompts(6, seed=11)
    params = SamplingParams(temperature=temperature, top_p=0.95)
    config = GenerationConfig(
        max_new_tokens=30, eos_token_ids=(EOS,), block_size=4, sampling=params, seeds=tuple(range(100, 106))
    )
    decoder = decoder_for(mode, model)
    batch = decoder.generate(prompts, config)
    for b, p in enumerate(prompts):
        single_config = GenerationConfig(
            max_new_tokens=30, eos_token_ids=(EOS,), block_size=4, sampling=params, seeds=(config.seeds[b],)
        )
        single = decoder.generate([p], single_config)
        assert batch.sequences[b] == single.sequences[0], (mode, b)
        assert batch.finish_reasons[b] == single.finish_reasons[0]


def test_batch_rows_finish_independently(model):
    """Rows hit EOS at different points; each keeps its own EOS and length."""
    prompts = random_prompts(8, seed=21)
    config = GenerationConfig(max_new_tokens=40, eos_token_ids=(EOS,), block_size=4)
    for mode in MODES:
        result = decoder_for(mode, model).generate(prompts, config)
        for seq, reason in zip(result.sequences, result.finish_reasons):
            assert (reason == "eos") == (seq[-1] == EOS) and EOS not in seq[:-1]
            assert reason != "length" or len(seq) == 40


def test_mask_id_is_never_emitted_even_when_it_is_the_argmax():
    """Deliberate difference: the reference can emit the mask id (AR decisions, commits of masked
    slots); no mode of ours does, and the modes stay equivalent."""
    import torch

    model = tri_tiny(seed=3)
    prompt = [5, 6, 7, 8]
    with torch.no_grad():  # make the mask id the AR argmax after the prompt
        best = int(model(torch.tensor([prompt]))[0, -1].argmax())
        model.lm_head.weight[3] = 3.0 * model.lm_head.weight[best]
    assert int(model(torch.tensor([prompt]))[0, -1].argmax()) == 3  # guard: it really is the argmax
    config = GenerationConfig(max_new_tokens=16, block_size=4)
    outputs = {mode: decoder_for(mode, model).generate([prompt], config).sequences[0] for mode in MODES}
    for mode, tokens in outputs.items():
        assert len(tokens) == 16 and 3 not in tokens, mode
    assert outputs["linear-spec"] == outputs["quadratic-spec"] == outputs["ar"]


def test_quadratic_is_lossless_where_the_llama4_query_scale_is_active():
    """Deliberate difference: the reference scales grid queries by their flat grid index, so heads
    past original_max_position_embeddings get the wrong scale; we use each token's real position."""
    from trimode.config import RopeConfig

    rope = RopeConfig(type="yarn", theta=1e6, factor=16.0, original_max_position_embeddings=8,
                      mscale=1.0, mscale_all_dim=1.0, llama4_scaling_beta=0.5)
    model = tri_tiny(seed=6, rope=rope, max_position_embeddings=4096)
    prompts = random_prompts(6, seed=41, longest=20)
    expected = ar_reference(model, prompts)
    config = GenerationConfig(max_new_tokens=40, eos_token_ids=(EOS,), block_size=6)
    for p, want in zip(prompts, expected):
        assert decoder_for("quadratic-spec", model).generate([p], config).sequences[0] == want
        assert decoder_for("linear-spec", model).generate([p], config).sequences[0] == want
    # Guard: positions here span several scale levels (floor(pos / 8) goes well past 1).
    assert max(len(p) for p in prompts) + 40 > 3 * 8


@pytest.mark.parametrize("mode", ["ar", "diffusion", "linear-spec", "quadratic-spec"])
def test_streamed_pieces_add_up_to_the_result(model, mode):
    """on_tokens sees every emitted id once, in order, per row, as the rows produce them."""
    seen: dict[int, list[list[int]]] = {0: [], 1: []}
    cfg = GenerationConfig(max_new_tokens=11, block_size=4, eos_token_ids=(2,))
    prompts = [[5, 9, 14], [7, 30]]
    streamed = decoder_for(mode, model).generate(prompts, cfg, on_tokens=lambda b, ids: seen[b].append(list(ids)))
    plain = decoder_for(mode, model).generate(prompts, cfg)
    assert streamed.sequences == plain.sequences
    for b in (0, 1):
        assert [t for piece in seen[b] for t in piece] == streamed.sequences[b]
        assert all(piece for piece in seen[b])
    if mode == "ar":
        assert all(len(piece) == 1 for pieces in seen.values() for piece in pieces)


@pytest.fixture(scope="module")
def scoped():
    """An adapter conversion whose adapter acts on mask slots only (quadratic-spec drafts with it)."""
    return tri_tiny(seed=0, adapter_scope="masks", denoise_adapter=True)


@pytest.mark.parametrize("mode, block", [("linear-spec", 4), ("linear-spec", 8), ("quadratic-spec", 2),
                                         ("quadratic-spec", 4), ("quadratic-spec", 7)])
def test_greedy_speculation_with_a_masks_scoped_adapter_equals_greedy_ar(scoped, mode, block):
    prompts = random_prompts(10, seed=100 + block)
    expected = ar_reference(scoped, prompts)
    decoder = decoder_for(mode, scoped)
    lengths = {}
    for adapter in (True, False):
        config = GenerationConfig(max_new_tokens=40, eos_token_ids=(EOS,), block_size=block, use_adapter=adapter)
        lengths[adapter] = []
        for p, want in zip(prompts, expected):
            result = decoder.generate([p], config)
            assert result.sequences[0] == want
            lengths[adapter].append(result.stats.accepted_lengths[0])
    # The adapter really drafts (in quadratic-spec too): the accepted lengths change with it.
    assert lengths[True] != lengths[False]


@pytest.mark.parametrize("mode", ["linear-spec", "quadratic-spec", "diffusion"])
def test_masks_scoped_batch_equals_single(scoped, mode):
    prompts = random_prompts(5, seed=7)
    config = GenerationConfig(max_new_tokens=24, eos_token_ids=(EOS,), block_size=4)
    decoder = decoder_for(mode, scoped)
    alone = [decoder.generate([p], config).sequences[0] for p in prompts]
    assert decoder.generate(prompts, config).sequences == alone
