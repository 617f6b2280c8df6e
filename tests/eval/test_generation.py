"""Batched generation over prompt lists: input order kept, equal to one call per prompt, counts."""

from __future__ import annotations

import pytest

from trimode.decoding import GenerationConfig, decoder_for
from trimode.eval.generation import Setting, generate_all, sweep


@pytest.fixture(scope="module")
def model():
    from conftest import tri_tiny

    return tri_tiny(seed=0)


PROMPTS = [[1, 5, 9, 4], [1, 7], [1, 8, 8, 8, 8, 6, 5], [1, 40, 41]]


@pytest.mark.parametrize("setting", [Setting("ar"), Setting.default("diffusion", 4, 0.5),
                                     Setting.default("linear-spec", 4), Setting.default("quadratic-spec", 3)])
def test_batches_match_single_calls_in_input_order(model, setting):
    decoder = decoder_for(setting.mode, model)
    run = generate_all(decoder, setting, PROMPTS, max_new_tokens=10, eos_token_ids=(2,), batch_size=3)
    assert len(run.batches) == 2  # 4 prompts at batch 3
    config = setting.config(10, (2,))
    for prompt, out in zip(PROMPTS, run.outputs):
        assert out.ids == decoder.generate([prompt], config).sequences[0]
    assert run.totals.generated_tokens == sum(len(o.ids) for o in run.outputs)
    assert run.totals.nfe == sum(s.nfe for s in run.batches)
    assert sum(run.histogram().values()) == len(run.accepted_lengths()) > 0


def test_ar_accepts_one_token_per_forward_after_the_prefill(model):
    run = generate_all(decoder_for("ar", model), Setting("ar"), PROMPTS, max_new_tokens=6, eos_token_ids=(),
                       batch_size=1)
    assert run.histogram() == {1: 5 * len(PROMPTS)}
    assert run.totals.tokens_per_forward == 1.0


def test_setting_config_routes_the_threshold():
    assert Setting.default("diffusion", 8, 0.5).config(5, (2,)).threshold == 0.5
    cfg = Setting.default("linear-spec", 8).config(5, (2,))
    assert isinstance(cfg, GenerationConfig) and cfg.draft_threshold == 0.0 and cfg.block_size == 8
    # The default block is the mode's block for the device (trimode.decoding.spec): 4 on a CPU, 8 on CUDA.
    assert Setting.default("quadratic-spec").block_size == 4
    assert Setting.default("quadratic-spec", device="cuda").block_size == 8


def test_sweep_and_bad_mode():
    labels = [s.label for s in sweep(["ar", "diffusion", "quadratic-spec"], [8, 16], [0.5, 0.9], [], [4])]
    assert labels == ["ar", "diffusion/B8/t0.5", "diffusion/B8/t0.9", "diffusion/B16/t0.5", "diffusion/B16/t0.9",
                      "quadratic-spec/B4"]
    with pytest.raises(ValueError, match="unknown mode 'fast'"):
        Setting("fast")
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        generate_all(None, Setting("ar"), PROMPTS, max_new_tokens=1, eos_token_ids=(), batch_size=0)
