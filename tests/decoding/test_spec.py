"""The table of modes (trimode.decoding.spec): every entry point reads these facts from it."""

from __future__ import annotations

import pytest
from conftest import tri_tiny  # pytest puts tests/ on sys.path

from trimode.decoding import (
    DECODERS,
    ENGINE_MODES,
    MODES,
    SPECS,
    GenerationConfig,
    decoder_for,
    spec_for,
    thresholds,
)
from trimode.engine import AutoDecoder


def test_every_decoder_mode_has_a_decoder_and_auto_is_the_engines():
    assert MODES == ("ar", "diffusion", "linear-spec", "quadratic-spec")
    assert ENGINE_MODES == (*MODES, "auto")
    assert set(DECODERS) == set(MODES)
    assert AutoDecoder.mode == "auto" and SPECS["auto"].engine_only
    with pytest.raises(ValueError, match="unknown mode 'auto'; expected one of ar, diffusion"):
        spec_for("auto")
    assert spec_for("auto", engine=True) is SPECS["auto"]


def test_default_blocks_per_device_and_the_minimum():
    # CPU: short blocks (a forward over T tokens costs far more than one token); CUDA: the published 32.
    assert [spec_for(m).block(None, "cpu") for m in MODES] == [1, 8, 8, 4]
    assert [spec_for(m).block(None, "cuda:1") for m in MODES] == [1, 32, 32, 8]
    assert spec_for("diffusion").block(None, "mps") == 8  # unknown device types run the CPU blocks
    assert spec_for("linear-spec").block(16, "cpu") == 16
    assert spec_for("diffusion").block(1) == 1
    for mode in ("linear-spec", "quadratic-spec"):
        with pytest.raises(ValueError, match=f"mode '{mode}' needs block_size >= 2, got 1"):
            spec_for(mode).block(1)


def test_a_block_is_bounded_per_mode_so_one_step_stays_small():
    # quadratic-spec at block 255 asked for a 65,280-token grid (13 GB of logits) and was killed.
    assert SPECS["quadratic-spec"].max_block == 32 and SPECS["quadratic-spec"].step_tokens(32) == 32 * 33 + 1
    for mode in ENGINE_MODES:
        spec = SPECS[mode]
        assert spec.block(spec.max_block) == spec.max_block
        with pytest.raises(ValueError, match=f"mode '{mode}' takes block_size <= {spec.max_block}, got"):
            spec.block(spec.max_block + 1)
    assert [SPECS[m].step_tokens(4) for m in ENGINE_MODES] == [1, 5, 5, 21, 5]


def test_scratch_is_what_one_step_writes_beyond_the_kept_tokens():
    assert [SPECS[m].scratch(4) for m in ENGINE_MODES] == [0, 4, 4, 20, 4]


def test_one_threshold_maps_to_both_knobs_and_not_given_keeps_each_default():
    assert thresholds() == {"threshold": 0.9, "draft_threshold": 0.0}
    assert thresholds(0.5) == {"threshold": 0.5, "draft_threshold": 0.5}
    assert thresholds(None) == {"threshold": None, "draft_threshold": None}
    assert SPECS["diffusion"].threshold_knob == "threshold"
    assert SPECS["linear-spec"].threshold_knob == "draft_threshold"
    assert [m for m in MODES if SPECS[m].lossless] == ["ar", "linear-spec", "quadratic-spec"]


def test_decoders_refuse_what_their_spec_rules_out():
    model = tri_tiny()
    plain = tri_tiny(mask_token_id=None)
    for mode in MODES:
        decoder = decoder_for(mode, plain)
        if SPECS[mode].needs_mask:
            with pytest.raises(ValueError, match="needs a mask token"):
                decoder.generate([[5, 6]], GenerationConfig(max_new_tokens=2, block_size=4))
        else:
            decoder.generate([[5, 6]], GenerationConfig(max_new_tokens=2, block_size=4))
    with pytest.raises(ValueError, match="block_size >= 2"):
        decoder_for("quadratic-spec", model).generate([[5, 6]], GenerationConfig(max_new_tokens=2, block_size=1))


def test_settings_are_the_batch_shaping_fields_only():
    a = GenerationConfig(max_new_tokens=3, block_size=4, threshold=0.5, seeds=(1,))
    b = GenerationConfig(max_new_tokens=9, block_size=4, threshold=0.5, acceptance="exact-match")
    assert a.settings == b.settings and hash(a.settings) == hash(b.settings)
    assert GenerationConfig(block_size=8).settings != a.settings
    with pytest.raises(ValueError, match="threshold must be in"):
        GenerationConfig(threshold=1.5)


def test_the_step_budget_is_per_device():
    from trimode.decoding.spec import STEP_TOKENS, step_tokens_budget

    assert step_tokens_budget("cpu") == STEP_TOKENS["cpu"] == 512
    assert step_tokens_budget("cuda:1") == STEP_TOKENS["cuda"] and step_tokens_budget("mps") == 512
    # The widest CPU request fits a CPU step; the widest grid does not.
    assert SPECS["diffusion"].step_tokens(SPECS["diffusion"].max_block) <= 512 < SPECS["quadratic-spec"].step_tokens(32)
