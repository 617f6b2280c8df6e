"""Thinking budget: the end-of-thinking token is forced after N thinking tokens in every mode."""

from __future__ import annotations

import pytest
from conftest import tri_tiny  # pytest puts tests/ on sys.path

from trimode.decoding import decoder_for
from trimode.decoding.base import GenerationConfig
from trimode.decoding.thinking import ThinkingBudget

START, END = 5, 6
MODES = ["ar", "diffusion", "linear-spec", "quadratic-spec"]


@pytest.fixture(scope="module")
def model():
    return tri_tiny(seed=4)


def test_rule_unit():
    rule = ThinkingBudget.for_prompts([[9, START], [9], [START, 8, END]], budget=2, end_id=END, start_id=START)
    assert rule.open_at_start == [True, False, False]
    assert rule(0, []) is None and rule(0, [7]) is None and rule(0, [7, 8]) == END
    assert rule(0, [7, END, 8, 9]) is None  # thinking already closed
    assert rule(1, [7, 8, 9]) is None  # not thinking
    assert rule(1, [START, 7]) is None and rule(1, [START, 7, 8]) == END  # thinking opened by the model
    assert ThinkingBudget.for_prompts([[START]], 0, END, START)(0, []) == END


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("budget", [0, 5, 13])
def test_end_token_forced_at_the_budget(model, mode, budget):
    prompts = [[9, 10, 11, START], [20, START], [30, 31, 32, 33, 34, START]]
    rule = ThinkingBudget.for_prompts(prompts, budget, END, START)
    config = GenerationConfig(max_new_tokens=24, block_size=4, force=rule)
    result = decoder_for(mode, model).generate(prompts, config)
    for seq in result.sequences:
        assert len(seq) == 24
        first_end = seq.index(END)
        assert first_end <= budget  # the model may close thinking early; never later
        if END not in seq[:budget]:
            assert first_end == budget


@pytest.mark.parametrize("mode", ["linear-spec", "quadratic-spec", "diffusion"])
def test_forcing_keeps_speculation_lossless(model, mode):
    """With the same forced token, greedy self-speculation still equals greedy AR (and diffusion
    with block 1 too): forcing voids what was decided after the forced position."""
    prompts = [[9, 10, 11, START], [40, 41, START], [50, START]]
    rule = ThinkingBudget.for_prompts(prompts, 7, END, START)
    block = 1 if mode == "diffusion" else 4
    config = GenerationConfig(max_new_tokens=30, block_size=block, force=rule)
    ar = decoder_for("ar", model).generate(prompts, config).sequences
    assert all(seq[7] == END for seq in ar if END not in seq[:7])
    assert decoder_for(mode, model).generate(prompts, config).sequences == ar
