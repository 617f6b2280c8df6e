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
    reveal_slots,
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


def _decoder_draft(model, x0, seed_at, block, given=()):
    """What linear-spec's drafter computes for the block seeded at x0[seed_at]: the prefix cached,
    then the seed and block-1 masks (token 3) with the adapter on the masks only. ``given`` slots
    hold their x0 tokens, adapter off, as a diffusion denoising step has them once committed."""
    cache = KVCache.for_model(model, 1, 32)
    if seed_at:
        model(x0[:, :seed_at], cache=cache)
    cache.advance(seed_at)
    draft = torch.full((1, block), 3)
    gate = torch.arange(block)[None] >= 1
    for j in (0, *given):
        draft[0, j] = x0[0, seed_at + j]
        gate[0, j] = False
    pos = torch.arange(seed_at, seed_at + block)[None]
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


def test_revealed_slots_are_drawn_per_block_and_never_seeds():
    """Phase 2, block 4: positions 0-1 have no seed; every block given 1..2 of its 3 slots at fraction 1,
    in order (a prefix of slots) in some blocks and scattered in others; none at fraction 0."""
    offset = block_offsets(torch.arange(42).expand(50, 42), 4, phase=2)
    gen = torch.Generator().manual_seed(0)
    assert not reveal_slots(offset, 4, 0.0, gen).any()
    got = reveal_slots(offset, 4, 1.0, gen)
    assert not got[offset < 1].any()
    per_block = got[:, 2:42].reshape(50, 10, 4)
    assert per_block[:, :, 0].logical_not().all()  # the seeds
    counts = per_block.sum(-1)
    assert counts.min() == 1 and counts.max() == 2
    given = [tuple(b.nonzero().flatten().tolist()) for b in per_block.reshape(-1, 4)]
    assert {(1,), (1, 2)} <= set(given) and {(2,), (3,), (1, 3), (2, 3)} & set(given)
    half = reveal_slots(offset, 4, 0.5, torch.Generator().manual_seed(1))[:, 2:42].reshape(500, 4).any(-1)
    assert 0.4 < float(half.float().mean()) < 0.6


def test_the_training_draft_with_revealed_slots_is_the_decoders_denoising_step():
    """A block whose slots 1 and 3 are given (committed by an earlier denoising forward) gets, at its
    remaining masks, the logits the decoder's denoising forward gets for that block; the given slots
    carry no loss."""
    model = tri_tiny(seed=2, adapter_scope="masks")
    block, x0 = 4, torch.randint(4, 96, (1, 12), generator=torch.Generator().manual_seed(3))
    revealed = torch.zeros_like(x0, dtype=torch.bool)
    revealed[0, [5, 7, 10]] = True  # block 1 (4..7): slots 1 and 3; block 2 (8..11): slot 2
    settings = DraftSettings(block_size=block, loss="all")
    with torch.no_grad():
        logits, *_, slots, _ = draft_forward(model, x0, torch.ones_like(x0).bool(), settings, revealed=revealed)
        trained = (slots[0].nonzero().flatten() + 1).tolist()
        assert trained == [1, 2, 3, 6, 9, 11]
        wants = {0: _decoder_draft(model, x0, 0, block), 4: _decoder_draft(model, x0, 4, block, given=(1, 3)),
                 8: _decoder_draft(model, x0, 8, block, given=(2,))}
        for row, p in enumerate(trained):
            seed_at = p - p % block
            assert torch.allclose(logits[row], wants[seed_at][0, p - seed_at], atol=1e-4), p


def test_revealed_slots_need_their_own_lower_layer_pass():
    model = _upper_only(tri_tiny(seed=3, adapter_scope="masks"))
    x0 = torch.randint(4, 96, (2, 16), generator=torch.Generator().manual_seed(4))
    lm = torch.ones_like(x0).bool()
    revealed = reveal_slots(block_offsets(torch.arange(16).expand(2, 16), 4), 4, 1.0, torch.Generator().manual_seed(5))
    exact = DraftSettings(block_size=4, loss="all")
    split = DraftSettings(block_size=4, loss="all", topk=96)
    plain = draft_terms(model, x0, lm, exact, revealed=revealed)
    frozen = draft_terms(model, x0, lm, split, revealed=revealed)
    assert abs(float(plain.loss) - float(frozen.loss)) < 1e-4
    assert plain.logs["blocks"] == 0  # no block is whole: accepted-length logs skip them
    teacher = compute_teacher(model, x0, 4, len(model.model.layers) - 1, 96, "masks")
    with pytest.raises(ValueError, match="revealed slots"):
        draft_terms(model, x0, lm, split, teacher, revealed=revealed)
