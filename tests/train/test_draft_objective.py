"""The drafting-adapter objective: masks drawn by hand, the training draft equal to the decoder's
draft, the frozen-lower-layers and teacher-store shortcuts equal to the plain computation."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import tri_tiny
from tests.test_masks import grid
from trimode import masks
from trimode.cache import KVCache
from trimode.model import DRAFT_ADAPTER
from trimode.train.draft_objective import (
    DraftSettings,
    TeacherStore,
    block_offsets,
    compute_teacher,
    draft_forward,
    draft_mask,
    draft_terms,
    slot_logs,
)


def _upper_only(model, top: int = 1):
    """Drop the adapter below the top ``top`` layers and freeze everything but its factors."""
    for layer in model.model.layers[: len(model.model.layers) - top]:
        layer.self_attn.o_proj.adapters.clear()
    model.requires_grad_(False)
    for n, p in model.named_parameters():
        if ".adapters." in n:
            p.requires_grad_(True)
    return model


def test_masks_scoped_draft_mask_reads_the_clean_prefix_through_the_seed():
    # L=4, B=2: columns clean c0..c3 | draft d0..d3; d0, d2 are seeds (throwaway rows).
    expected = grid(
        """
        d0| 1 0 0 0 0 0 0 0
        d1| 1 0 0 0 0 1 0 0
        d2| 1 1 1 0 0 0 0 0
        d3| 1 1 1 0 0 0 0 1
        """
    )
    assert torch.equal(draft_mask(4, 2, scope="masks"), expected)


def _decoder_draft(model, x0, seed_at, block):
    """What linear-spec's drafter computes for the block seeded at x0[seed_at]: the prefix cached,
    then the seed and block-1 masks (token 3) with the adapter on the masks only."""
    cache = KVCache.for_model(model, 1, 32)
    if seed_at:
        model(x0[:, :seed_at], cache=cache)
    cache.advance(seed_at)
    draft = torch.full((1, block), 3)
    draft[0, 0] = x0[0, seed_at]
    pos = torch.arange(seed_at, seed_at + block)[None]
    gate = torch.arange(block)[None] >= 1
    return model(draft, pos, cache, pattern=masks.known_then_block(block, 1), adapter=DRAFT_ADAPTER, adapter_gate=gate)


def test_the_training_draft_is_the_decoders_draft():
    """Masks scope: block k's slots in training get the logits a linear-spec draft forward gets over
    a cache of x0[:kB+1] (seed causal, adapter off; masks bidirectional, adapter on)."""
    model = tri_tiny(seed=2, adapter_scope="masks")
    block, x0 = 4, torch.randint(4, 96, (1, 12), generator=torch.Generator().manual_seed(3))
    settings = DraftSettings(block_size=block, loss="all")
    with torch.no_grad():
        logits, *_ , slots, _ = draft_forward(model, x0, torch.ones_like(x0).bool(), settings)
        ours = logits.view(-1, block - 1, logits.shape[-1])  # every slot trained: (L/B) blocks of B-1
        for k in range(x0.shape[1] // block):
            want = _decoder_draft(model, x0, k * block, block)[0, 1:]
            assert torch.allclose(ours[k], want, atol=1e-4), k


def test_frozen_lower_layers_and_the_teacher_store_give_the_same_loss():
    model = _upper_only(tri_tiny(seed=3, adapter_scope="masks"))
    x0 = torch.randint(4, 96, (2, 16), generator=torch.Generator().manual_seed(4))
    lm = torch.ones_like(x0).bool()
    exact = DraftSettings(block_size=4, loss="all")
    topk = DraftSettings(block_size=4, loss="all", topk=96)  # top-k over the whole vocabulary: no truncation
    plain = draft_terms(model, x0, lm, exact)
    split = draft_terms(model, x0, lm, topk)
    start = len(model.model.layers) - 1
    teacher = compute_teacher(model, x0, 4, start, 96, "masks")
    stored = TeacherStore(64)
    for r in range(2):
        stored.put(r, teacher.rows([r]))
    from trimode.train.draft_objective import Teacher

    kept = Teacher.cat([stored.get(r).to(dtype=torch.float32) for r in range(2)])
    again = draft_terms(model, x0, lm, topk, kept)
    assert abs(float(plain.loss.detach()) - float(split.loss.detach())) < 1e-3 * float(plain.loss.detach())
    assert abs(float(again.loss) - float(split.loss)) < 2e-2 * float(split.loss)  # stored in bfloat16
    again.loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads.values())
    assert stored.hits == 2 and stored.used > 0


def test_every_slot_learns_from_the_start_with_position_weights():
    model = tri_tiny(seed=5)
    x0 = torch.randint(4, 96, (1, 8), generator=torch.Generator().manual_seed(6))
    terms = draft_terms(model, x0, torch.ones_like(x0).bool(), DraftSettings(block_size=4, loss="all", gamma=0.5))
    # Slots 1, 2, 3 of two blocks weigh 1, 0.5, 0.25.
    assert abs(terms.count - 2 * 1.75) < 1e-6
    assert terms.logs["draft_eligible"] == 6


def test_slot_logs_count_hits_per_slot_and_the_accepted_prefix():
    # Block 4, positions 1..11 (columns 0..10): blocks {1,2,3} {5,6,7} {9,10,11}; 4 and 8 are seeds.
    hit = torch.tensor([[1, 1, 0, 1, 1, 0, 1, 1, 1, 1, 1]], dtype=torch.bool)
    slots = torch.tensor([[1, 1, 1, 0, 1, 1, 1, 0, 1, 1, 1]], dtype=torch.bool)
    logs = slot_logs(hit, slots, 4)
    assert [logs[f"slot{j}_hits"] for j in (1, 2, 3)] == [3, 2, 2]
    assert logs["blocks"] == 3 and logs["accepted_sum"] == 2 + 1 + 3


def test_a_block_phase_moves_the_seeds_hand_drawn():
    # L=5, B=2, phase 1: seeds at 1 and 3; position 0 has no seed before it and sees only itself.
    expected = grid(
        """
        d0| 0 0 0 0 0 1 0 0 0 0
        d1| 1 1 0 0 0 0 0 0 0 0
        d2| 1 1 0 0 0 0 0 1 0 0
        d3| 1 1 1 1 0 0 0 0 0 0
        d4| 1 1 1 1 0 0 0 0 0 1
        """
    )
    assert torch.equal(draft_mask(5, 2, scope="masks", phase=1), expected)
    assert block_offsets(torch.arange(7), 4, 2).tolist() == [-1, -1, 0, 1, 2, 3, 0]
    with pytest.raises(ValueError, match="scope 'masks'"):
        draft_mask(5, 2, scope="block", phase=1)


@pytest.mark.parametrize("phase", [1, 3])
def test_the_training_draft_at_a_phase_is_the_decoders_draft(phase):
    """With blocks starting at ``phase``, every trained slot gets the logits of a linear-spec draft
    seeded at its block's seed; the positions before the first seed carry no loss. (A block cut by
    the sequence's end lacks the masks after it, at any phase: only whole blocks are compared.)"""
    model = tri_tiny(seed=2, adapter_scope="masks")
    block, x0 = 4, torch.randint(4, 96, (1, 13), generator=torch.Generator().manual_seed(3))
    settings = DraftSettings(block_size=block, loss="all", phase=phase)
    with torch.no_grad():
        logits, *_, slots, offset = draft_forward(model, x0, torch.ones_like(x0).bool(), settings)
        positions = (slots[0].nonzero().flatten() + 1).tolist()
        assert positions == [p for p in range(1, 13) if p > phase and (p - phase) % block]
        for row, p in enumerate(positions):
            seed_at = p - int(offset[0, p])
            if seed_at + block > x0.shape[1]:
                continue
            want = _decoder_draft(model, x0, seed_at, block)[0, p - seed_at]
            assert torch.allclose(logits[row], want, atol=1e-4), p


def test_slot_logs_at_a_phase_skip_the_seedless_start():
    # Block 4, phase 2, positions 1..9 (columns 0..8): 1 has no seed; 2 and 6 are seeds; blocks {3,4,5} {7,8,9}.
    hit = torch.tensor([[0, 1, 1, 1, 0, 1, 0, 1, 1]], dtype=torch.bool)
    slots = torch.tensor([[0, 0, 1, 1, 1, 0, 1, 1, 1]], dtype=torch.bool)
    logs = slot_logs(hit, slots, 4, phase=2)
    assert [logs[f"slot{j}_hits"] for j in (1, 2, 3)] == [1, 2, 1]
    assert logs["blocks"] == 2 and logs["accepted_sum"] == 2 + 0


def test_a_teacher_is_used_only_at_its_own_phase():
    model = _upper_only(tri_tiny(seed=3, adapter_scope="masks"))
    x0 = torch.randint(4, 96, (2, 16), generator=torch.Generator().manual_seed(4))
    lm = torch.ones_like(x0).bool()
    start = len(model.model.layers) - 1
    teacher = compute_teacher(model, x0, 4, start, 96, "masks", phase=2)
    at2 = DraftSettings(block_size=4, loss="all", topk=96, phase=2)
    assert abs(float(draft_terms(model, x0, lm, at2, teacher).loss) - float(draft_terms(model, x0, lm, at2).loss)) < 1e-4
    with pytest.raises(ValueError, match="phase 2"):
        draft_terms(model, x0, lm, DraftSettings(block_size=4, loss="all", topk=96, phase=1), teacher)
