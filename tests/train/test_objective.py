"""Training objectives: the reference's training-forward goldens, our deliberate differences,
hand-drawn masks, corruption properties, and the drafting-adapter loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import tri_tiny
from trimode.train.objective import (
    Corruption,
    ObjectiveConfig,
    accepted_prefix_plus_one,
    adapter_terms,
    ar_terms,
    corrupt,
    draft_mask,
    joint_terms,
)

CASES = ["t24", "t18", "t24_lossmask"]


def _case(golden, tensors, case):
    meta = next(c for c in golden["training_forward"] if c["id"] == f"train/{case}")
    x0 = tensors[f"train.{case}.input_ids"]
    loss_mask = torch.tensor(meta["loss_mask"])[None].bool() if meta["loss_mask"] else torch.ones_like(x0).bool()
    masked = tensors[f"train.{case}.masked_indices_after_call"].bool()
    return meta, x0, loss_mask, Corruption(masked, torch.tensor([meta["p_mask_value"]]))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("weight,key", [(1.0, ""), (0.3, "_with_dlm_loss_weight_0.3")])
def test_reference_loss_sum_and_token_count(nld_tiny, golden, tensors, case, weight, key):
    """With the reference's accounting, loss sum and token count equal the published code's."""
    meta, x0, loss_mask, corruption = _case(golden, tensors, case)
    cfg = ObjectiveConfig(block_size=meta["block_size"], diffusion_weight=weight, reference_ar_count=True)
    with torch.no_grad():
        terms = joint_terms(nld_tiny.model, x0, loss_mask, corruption, cfg)
    expected = meta[f"loss_sum{key}"]
    assert abs(float(terms.loss) - expected) <= 1e-5 * abs(expected)
    assert terms.count == meta[f"token_count{key}"] == meta["num_masked"] + x0.shape[1]
    if weight == 0.3:  # the reference's per-part attributes: weighted mean over masked, AR sum / L
        attrs = meta["attrs_set_by_last_call_(dlm_loss_weight=0.3)"]
        assert abs(0.3 * terms.logs["diffusion_sum"] / meta["num_masked"] - attrs["loss_diffusion"]) < 1e-4
        assert abs(terms.logs["ar_sum"] / x0.shape[1] - attrs["loss_ar"]) < 1e-4


def test_our_ar_side_honours_the_loss_mask_and_counts_real_terms(nld_tiny, golden, tensors):
    """Where we differ on purpose: AR terms only for targets inside the loss mask (prompts are not
    trained), counted once each (L-1 terms at most, not L)."""
    meta, x0, loss_mask, corruption = _case(golden, tensors, "t24_lossmask")
    ours = ObjectiveConfig(block_size=8, diffusion_weight=0.3)
    with torch.no_grad():
        terms = joint_terms(nld_tiny.model, x0, loss_mask, corruption, ours)
        ref = joint_terms(nld_tiny.model, x0, loss_mask, corruption, ObjectiveConfig(block_size=8, diffusion_weight=0.3,
                                                                                   reference_ar_count=True))
    targets = loss_mask[0, 1:]
    assert terms.count == meta["num_masked"] + int(targets.sum()) == 9 + 18
    causal = tensors["train.t24_lossmask.causal_logits"][0]  # the clean half's logits, [L, V]
    ce = F.cross_entropy(causal[:-1], x0[0, 1:], reduction="none")
    assert abs(terms.logs["ar_sum"] - float(ce[targets].sum())) < 1e-3
    assert abs(ref.logs["ar_sum"] - float(ce.sum())) < 1e-3
    assert terms.logs["diffusion_sum"] == pytest.approx(ref.logs["diffusion_sum"], rel=1e-6)


def test_draft_mask_hand_drawn():
    """Draft queries over [cached clean x0 | draft stream], L=4, B=2: a draft block sees the clean
    tokens of earlier blocks and its own block, never its own or later clean tokens."""
    expected = torch.tensor([
        # c0 c1 c2 c3 | n0 n1 n2 n3
        [0, 0, 0, 0, 1, 1, 0, 0],
        [0, 0, 0, 0, 1, 1, 0, 0],
        [1, 1, 0, 0, 0, 0, 1, 1],
        [1, 1, 0, 0, 0, 0, 1, 1],
    ], dtype=torch.bool)
    assert torch.equal(draft_mask(4, 2), expected)


def test_accepted_prefix_plus_one_hand_drawn():
    # Columns are positions 1..7 with block 4: blocks {1,2,3}, {4,5,6,7}.
    hit = torch.tensor([[1, 0, 1, 1, 1, 0, 0], [0, 1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    expected = torch.tensor([[1, 1, 0, 1, 1, 1, 0], [1, 0, 0, 1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(accepted_prefix_plus_one(hit, 4), expected)


def _loss_mask(rows=6, length=40):
    m = torch.ones(rows, length, dtype=torch.bool)
    m[:, :7] = False  # a prompt
    m[2, 30:] = False
    return m


@pytest.mark.parametrize("masking", ["uniform", "blockwise"])
def test_corruption_respects_loss_mask_and_is_split_invariant(masking):
    cfg = ObjectiveConfig(block_size=8, masking=masking)
    lm = _loss_mask()
    whole = corrupt(lm, cfg, seed=3, step=5, first_row=0)
    assert not (whole.masked & ~lm).any()
    assert ((whole.p >= cfg.eps) & (whole.p <= 1.0)).all()
    # Rows draw from their own streams: any split over ranks/micro-batches gives the same corruption.
    parts = [corrupt(lm[a:b], cfg, 3, 5, a) for a, b in [(0, 1), (1, 4), (4, 6)]]
    assert torch.equal(torch.cat([p.masked for p in parts]), whole.masked)
    assert torch.equal(torch.cat([p.p for p in parts]), whole.p)
    other = corrupt(lm, cfg, seed=3, step=6, first_row=0)
    assert not torch.equal(other.p, whole.p)


def test_blockwise_masks_exact_counts_biased_late_at_small_ratio():
    cfg = ObjectiveConfig(block_size=8, masking="blockwise")
    lm = torch.ones(400, 32, dtype=torch.bool)
    c = corrupt(lm, cfg, seed=0, step=0, first_row=0)
    for r in range(20):
        for start in range(0, 32, 8):
            assert int(c.masked[r, start : start + 8].sum()) == round(float(c.p[r]) * 8)
    small = c.p < 0.3
    offsets = torch.arange(32) % 8
    mean_offset = (c.masked[small].float() * offsets).sum() / c.masked[small].sum()
    assert mean_offset > 4.0  # uniform would give 3.5


def test_adapter_objective_trains_only_the_adapter():
    model = tri_tiny()
    model.requires_grad_(False)
    lora = [p for n, p in model.named_parameters() if ".adapters." in n]
    for p in lora:
        p.requires_grad_(True)
    x0 = torch.randint(4, 96, (2, 16), generator=torch.Generator().manual_seed(0))
    terms = adapter_terms(model, x0, torch.ones_like(x0).bool(), ObjectiveConfig(kind="adapter", block_size=4))
    terms.loss.backward()
    assert terms.count >= 2 * 4  # at least the first draft slot of each block is always trained
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora)
    assert all(p.grad is None for n, p in model.named_parameters() if ".adapters." not in n)


def test_adapter_target_is_the_verifier_with_adapter_off():
    """The drafter's targets are the causal adapter-off logits; its inputs see only earlier clean blocks:
    with a zero adapter the draft slot 1 of block 0 equals a plain bidirectional forward of [x0, MASK]."""
    model = tri_tiny()
    for n, p in model.named_parameters():
        if n.endswith(".B"):
            p.data.zero_()
    x0 = torch.randint(4, 96, (1, 8), generator=torch.Generator().manual_seed(1))
    cfg = ObjectiveConfig(kind="adapter", block_size=4, distill_kl_weight=0.0)
    with torch.no_grad():
        terms = adapter_terms(model, x0, torch.ones_like(x0).bool(), cfg)
        causal = model(x0)
        draft = model(torch.tensor([[int(x0[0, 0]), 3]]), pattern="bidirectional")[0, 1]
    target = int(causal[0, 0].argmax())
    assert terms.logs["draft_eligible"] == 6
    # The first slot is always trained: its CE is part of the sum.
    assert terms.logs["distill_ce_sum"] >= float(F.cross_entropy(draft[None], torch.tensor([target]))) - 1e-4


def test_ar_objective_matches_a_plain_causal_cross_entropy():
    model = tri_tiny()
    x0 = torch.randint(4, 96, (2, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        terms = ar_terms(model, x0, torch.ones_like(x0).bool(), ObjectiveConfig(kind="ar", block_size=4))
        logits = model(x0)
    ce = F.cross_entropy(logits[:, :-1].reshape(-1, 96), x0[:, 1:].reshape(-1), reduction="sum")
    assert abs(float(terms.loss) - float(ce)) < 1e-3
    assert terms.count == 2 * 11


def test_objective_config_errors():
    with pytest.raises(ValueError, match="objective must be one of"):
        ObjectiveConfig(kind="bert")
    with pytest.raises(ValueError, match="masking"):
        ObjectiveConfig(masking="random")
    with pytest.raises(ValueError, match="block_size"):
        ObjectiveConfig(block_size=1)


def test_flex_attention_training_forward_equals_the_boolean_mask(nld_tiny, golden, tensors):
    """The block-sparse flex-attention path (used on CUDA) computes the same loss as boolean SDPA;
    here it runs eagerly on the CPU."""
    meta, x0, loss_mask, corruption = _case(golden, tensors, "t24")
    with torch.no_grad():
        sdpa = joint_terms(nld_tiny.model, x0, loss_mask, corruption, ObjectiveConfig(block_size=8, attention="sdpa"))
        flex = joint_terms(nld_tiny.model, x0, loss_mask, corruption, ObjectiveConfig(block_size=8, attention="flex"))
    assert abs(float(flex.loss) - float(sdpa.loss)) < 1e-3
    assert flex.count == sdpa.count


def test_gradient_checkpointing_gives_the_same_gradients():
    model = tri_tiny()
    x0 = torch.randint(4, 96, (2, 16), generator=torch.Generator().manual_seed(3))
    lm = torch.ones_like(x0).bool()
    cfg = ObjectiveConfig(block_size=4)
    grads = []
    for recompute in (False, True):
        model.zero_grad()
        model.gradient_checkpointing = recompute
        corruption = corrupt(lm, cfg, seed=0, step=0, first_row=0)
        joint_terms(model, x0, lm, corruption, cfg).loss.backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    assert len(grads[0]) == len(grads[1]) > 0
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads))


def test_draft_phase_is_drawn_per_micro_batch_reproducibly():
    from trimode.train.objective import draft_phase

    fixed, rand = ObjectiveConfig(kind="adapter", block_size=8), ObjectiveConfig(kind="adapter", block_size=8, draft_phase="random")
    assert {draft_phase(fixed, 0, step, 0) for step in range(50)} == {0}
    drawn = [draft_phase(rand, 0, step, 0) for step in range(200)]
    assert drawn == [draft_phase(rand, 0, step, 0) for step in range(200)]  # a resumed run draws the same
    assert set(drawn) == set(range(8))
    assert [draft_phase(rand, 1, s, 0) for s in range(20)] != drawn[:20]
    with pytest.raises(ValueError, match="draft_phase"):
        ObjectiveConfig(kind="adapter", draft_phase="sometimes")


def test_revealed_slots_are_drawn_per_micro_batch_reproducibly():
    from trimode.train.objective import draft_revealed

    none = ObjectiveConfig(kind="adapter", block_size=8)
    some = ObjectiveConfig(kind="adapter", block_size=8, draft_reveal=0.5)
    assert draft_revealed(none, 0, 3, 0, (2, 64), 0, "cpu") is None
    drawn = draft_revealed(some, 0, 3, 0, (2, 64), 5, "cpu")
    assert torch.equal(drawn, draft_revealed(some, 0, 3, 0, (2, 64), 5, "cpu"))  # a resumed run draws the same
    assert not torch.equal(drawn, draft_revealed(some, 0, 4, 0, (2, 64), 5, "cpu"))
    assert not drawn[:, :6].any() and drawn.any()  # nothing at or before the first seed (phase 5)
    with pytest.raises(ValueError, match="draft_reveal"):
        ObjectiveConfig(kind="adapter", draft_reveal=1.5)
    with pytest.raises(ValueError, match="block_size >= 3"):
        ObjectiveConfig(kind="adapter", block_size=2, draft_reveal=0.5)
