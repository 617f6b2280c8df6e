"""Every decode golden of ../shared/fixtures/nld-tiny, token for token, with the reference's
statistics where they are comparable, and each deliberate difference pinned by a test.

Reference nfe conventions (fixtures README): diffusion leaves the prefill out but counts a final
commit whose output is unused; linear spec counts the prefill; quadratic counts a bootstrap forward
that also does the prefill. Ours counts every forward and skips the useless final commit, so for
diffusion and linear spec our nfe equals the reference's.
"""

from __future__ import annotations

import pytest
from conftest import golden_ids  # pytest puts tests/ on sys.path

from trimode.decoding import (
    DiffusionDecoder,
    GenerationConfig,
    LinearSpecDecoder,
    QuadraticSpecDecoder,
)
from trimode.model import load

EOS = 11


@pytest.fixture(scope="module")
def plain(nld_tiny_dir):
    return load(nld_tiny_dir, adapter=False).model


def _cases(golden, *keys):
    return [c for k in keys for c in golden[k]]


DIFFUSION = ("generate", "generate_extra")
LINEAR = ("linear_spec_generate", "linear_spec_generate_extra")


@pytest.mark.parametrize("case_id", golden_ids(*DIFFUSION))
def test_diffusion_goldens(nld_tiny, golden, case_id):
    case = next(c for c in _cases(golden, *DIFFUSION) if c["id"] == case_id)
    call = case["call"]
    config = GenerationConfig(
        max_new_tokens=call["max_new_tokens"], eos_token_ids=(EOS,), block_size=call["block_length"],
        threshold=call["threshold"], causal_context=call["causal_context"],
    )
    result = DiffusionDecoder(nld_tiny.model).generate([golden["prompts"][case["prompt"]]], config)
    assert result.sequences[0] == case["new_tokens"]
    ours, theirs = result.stats.block_commits[0], case["commits_per_step_per_block"]
    if case["new_tokens"][-1] == EOS and len(ours) == len(theirs) - 1:
        # Deliberate: when a block's seed is EOS the row ends; the reference still denoises that block.
        assert sum(map(len, ours)) == case["num_denoise_forwards"] - len(theirs[-1])
        assert result.stats.nfe == case["nfe"] - len(theirs[-1])
        theirs = theirs[:-1]
    else:
        assert result.stats.nfe == case["nfe"]
    assert ours == theirs  # the commit rule, step by step


def test_diffusion_seed_eos_case_is_exercised(golden):
    """Guard for the branch above: gen/peos/bl8/thr0.9 ends on a block whose seed is EOS."""
    case = next(c for c in golden["generate"] if c["id"] == "gen/peos/bl8/thr0.9")
    assert case["new_tokens"][-1] == EOS and len(case["new_tokens"]) % 8 == 1


@pytest.mark.parametrize("case_id", golden_ids(*LINEAR))
def test_linear_spec_goldens(nld_tiny, plain, golden, case_id):
    case = next(c for c in _cases(golden, *LINEAR) if c["id"] == case_id)
    call = case["call"]
    model = nld_tiny.model if case["lora"] else plain
    config = GenerationConfig(
        max_new_tokens=call["max_new_tokens"], eos_token_ids=(EOS,), block_size=call["block_length"],
        draft_threshold=call["threshold"],
    )
    result = LinearSpecDecoder(model).generate([golden["prompts"][case["prompt"]]], config)
    tokens = result.sequences[0]
    # Deliberate: the reference does not clip its last cycle; we stop at max_new_tokens.
    assert len(tokens) == min(len(case["new_tokens"]), call["max_new_tokens"])
    assert tokens == case["new_tokens"][: len(tokens)]
    assert result.stats.accepted_lengths[0] == case["accepted_per_cycle"]
    assert result.stats.nfe == case["nfe"]
    assert result.stats.forwards["draft"] == sum(case["draft_forwards_per_cycle"])
    assert result.stats.forwards["verify"] == case["num_cycles"]


def test_linear_spec_unclipped_cases_exist(golden):
    """Guard: some references overshoot max_new_tokens, so the clipping branch above is exercised."""
    assert any(c["exceeds_max_new_tokens"] for c in golden["linear_spec_generate"])


def test_adapter_changes_linear_spec(nld_tiny, plain, golden):
    prompt = golden["prompts"]["p5"]
    config = GenerationConfig(max_new_tokens=64, eos_token_ids=(EOS,), block_size=8)
    with_adapter = LinearSpecDecoder(nld_tiny.model).generate([prompt], config).stats
    off_config = GenerationConfig(max_new_tokens=64, eos_token_ids=(EOS,), block_size=8, use_adapter=False)
    switched_off = LinearSpecDecoder(nld_tiny.model).generate([prompt], off_config).stats
    without = LinearSpecDecoder(plain).generate([prompt], config).stats
    assert with_adapter.accepted_lengths != without.accepted_lengths
    assert switched_off.accepted_lengths == without.accepted_lengths  # use_adapter=False really is off


@pytest.mark.parametrize("case_id", golden_ids("quadratic_self_spec"))
def test_quadratic_goldens(plain, golden, case_id):
    case = next(c for c in golden["quadratic_self_spec"] if c["id"] == case_id)
    call = case["call"]
    config = GenerationConfig(max_new_tokens=call["max_new_tokens"], eos_token_ids=(EOS,), block_size=call["block_length"])
    result = QuadraticSpecDecoder(plain).generate([golden["prompts"][case["prompt"]]], config)
    assert result.sequences[0] == case["new_tokens"]
    reference = [a for a in case["accepted_per_cycle"] if isinstance(a, int)]
    ours = result.stats.accepted_lengths[0]
    # Deliberate: we emit the bonus token when it is verified, the reference one cycle later, so our
    # run can end one cycle (one forward) earlier; the per-cycle counts are the same.
    assert ours == reference[: len(ours)] and len(reference) - len(ours) in (0, 1)
    cycles_theirs = case["nfe"] - 1  # the reference's first forward is the prefill + bootstrap
    assert result.stats.forwards["grid"] in (cycles_theirs, cycles_theirs - 1)
    assert result.stats.nfe == 1 + result.stats.forwards["grid"]
