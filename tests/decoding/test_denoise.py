"""trimode.decoding.denoise: the commit schedule, when a row is settled, and block denoising driven
by scripted logits (what is committed at each forward, what the model sees), then on a tiny model."""

from __future__ import annotations

import pytest
import torch
from conftest import random_prompts, tri_tiny  # pytest puts tests/ on sys.path

from trimode.decoding import decoder_for
from trimode.decoding.base import Batch, GenerationConfig, Row
from trimode.decoding.denoise import _settled, denoise_block, quota_schedule

V, MASK = 6, 5


@pytest.fixture(scope="module")
def model():
    return tri_tiny(seed=0)


def test_quota_schedule_spreads_the_masks_remainder_first():
    assert quota_schedule(7, 3) == [3, 2, 2]
    assert quota_schedule(8, 4) == [2, 2, 2, 2]
    assert quota_schedule(2, 4) == [1, 1, 0, 0]
    assert quota_schedule(0, 2) == [0, 0]


def test_settled_means_every_emittable_slot_is_known():
    assert not _settled([4, MASK, 3], [False, True, False], needed=3, eos={2})
    assert _settled([4, MASK, 3], [False, True, False], needed=1, eos={2})  # only the first slot is needed
    assert _settled([2, MASK, MASK], [False, True, True], needed=3, eos={2})  # EOS first: nothing after it counts
    assert not _settled([MASK, 2], [True, False], needed=2, eos={2})  # a mask before the EOS may still emit
    assert _settled([4, 4], [False, False], needed=5, eos=set())


def peaked(*slots: tuple[int, float]) -> torch.Tensor:
    """Logits [1, T, V]: slot t puts probability p on its token and spreads the rest evenly."""
    rows = []
    for token, p in slots:
        probs = torch.full((V,), (1 - p) / (V - 1))
        probs[token] = p
        rows.append(probs.log())
    return torch.stack(rows)[None]


class Scripted:
    """A decoder whose model returns the next scripted logits and records the blocks it was given."""

    def __init__(self, *logits: torch.Tensor) -> None:
        self.script, self.seen, self.patterns, self.counted = list(logits), [], [], []
        self.model = self._forward

    def _forward(self, block, positions, cache, *, pattern, adapter, adapter_gate):
        self.seen.append(block[0].tolist())
        self.patterns.append((pattern, adapter, adapter_gate))
        return self.script.pop(0)

    def count(self, batch, kind, rows):
        self.counted.append((kind, len(rows)))


def run(decoder: Scripted, seed: int, *, threshold, max_steps, eos=(), needed=None):
    batch = Batch("diffusion", GenerationConfig())
    batch.rows = [Row([1], GenerationConfig(eos_token_ids=eos))]
    block = torch.tensor([[seed, 0, 0, 0]])  # the values after the known slot are overwritten with the mask
    return denoise_block(decoder, batch, block, torch.arange(4)[None], [0], known=1, mask_id=MASK,
                         threshold=threshold, max_steps=max_steps, kind="denoise", needed=needed)


def test_threshold_commits_the_best_slot_and_every_confident_one():
    decoder = Scripted(
        peaked((0, 0.9), (2, 0.95), (3, 0.5), (4, 0.3)),  # slot 1 only (0.95 >= 0.9; slot 0 is given)
        peaked((0, 0.9), (1, 0.99), (3, 0.6), (4, 0.92)),  # slot 3 only (slot 1 is committed already)
        peaked((0, 0.9), (1, 0.99), (3, 0.4), (1, 0.3)),  # slot 2 as the most confident left, though below
    )
    result = run(decoder, 4, threshold=0.9, max_steps=4)
    assert result.tokens.tolist() == [[4, 2, 3, 4]]
    assert (result.steps, result.commits, result.q) == ([3], [[1, 1, 1]], None)
    assert decoder.seen == [[4, MASK, MASK, MASK], [4, 2, MASK, MASK], [4, 2, MASK, 4]]
    assert decoder.patterns == [("bidirectional", None, None)] * 3 and decoder.counted == [("denoise", 1)] * 3


def test_fixed_counts_follow_the_schedule_by_confidence():
    decoder = Scripted(
        peaked((0, 0.9), (1, 0.5), (2, 0.8), (3, 0.7)),  # quota 2 of 3 masks over 2 steps: slots 2 and 3
        peaked((0, 0.9), (4, 0.2), (2, 0.8), (3, 0.7)),  # quota 1: slot 1, whatever its confidence
    )
    result = run(decoder, 0, threshold=None, max_steps=2)
    assert result.tokens.tolist() == [[0, 4, 2, 3]] and result.commits == [[2, 1]]
    assert decoder.seen[1] == [0, MASK, 2, 3]


def test_a_spent_step_budget_fills_the_rest_from_the_last_forward():
    decoder = Scripted(peaked((0, 0.9), (1, 0.3), (2, 0.4), (3, 0.35)))
    result = run(decoder, 0, threshold=0.9, max_steps=1)
    assert result.tokens.tolist() == [[0, 1, 2, 3]]
    assert (result.steps, result.commits) == ([1], [[1]])  # one slot committed, two filled without a forward
    assert not decoder.script and len(decoder.seen) == 1


def test_a_row_stops_once_its_eos_or_its_budget_settles_it():
    decoder = Scripted(peaked((0, 0.9), (2, 0.95), (3, 0.5), (4, 0.3)), peaked((0, 0.9), (2, 0.9), (3, 0.5), (4, 0.3)))
    result = run(decoder, 0, threshold=0.9, max_steps=4, eos=(2,))
    assert result.steps == [1] and result.tokens[0, :2].tolist() == [0, 2]  # EOS at slot 1: done
    decoder = Scripted(peaked((0, 0.9), (1, 0.5), (4, 0.95), (4, 0.3)), peaked((0, 0.9), (1, 0.5), (4, 0.9), (4, 0.3)))
    result = run(decoder, 0, threshold=0.9, max_steps=4, needed=[2])
    assert result.steps == [2] and result.tokens[0, :2].tolist() == [0, 1]  # 1 more token needed: slot 1 decides


def test_a_given_slot_equal_to_the_mask_id_stays_given():
    """Which slots are masked is positional: a seed that happens to be the mask id is not re-decided."""
    decoder = Scripted(peaked((0, 0.99), (1, 0.95), (2, 0.95), (3, 0.95)))
    result = run(decoder, MASK, threshold=0.9, max_steps=4)
    assert result.tokens.tolist() == [[MASK, 1, 2, 3]] and result.commits == [[3]]


def test_diffusion_step_budget(model):
    """max_steps caps the denoising forwards per block; leftovers are filled, lengths are kept."""
    prompts = random_prompts(4, seed=31)
    full = GenerationConfig(max_new_tokens=32, block_size=8, threshold=None)
    capped = GenerationConfig(max_new_tokens=32, block_size=8, threshold=None, max_steps=2)
    decoder = decoder_for("diffusion", model)
    for p in prompts:
        a = decoder.generate([p], full)
        b = decoder.generate([p], capped)
        assert len(a.sequences[0]) == len(b.sequences[0]) == 32
        assert all(s == 7 for s in a.stats.block_steps[0])
        assert all(s <= 2 for s in b.stats.block_steps[0])
        assert b.stats.nfe < a.stats.nfe
        assert 3 not in b.sequences[0]  # the mask id is never emitted
