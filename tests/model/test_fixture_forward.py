"""Forward logits of ../shared/fixtures/nld-tiny (the publisher's reference, float32, tol 1e-4)."""

from __future__ import annotations

import pytest
import torch

from trimode import masks
from trimode.cache import KVCache
from trimode.model import DRAFT_ADAPTER

TOL = 1e-4


def test_loaded_config_is_the_nld_layout(nld_tiny):
    cfg = nld_tiny.config
    assert cfg.model_type == "nemotron_labs_diffusion" and not cfg.tie_word_embeddings
    assert cfg.mask_token_id == 100 and cfg.eos_token_ids == (11,)
    assert cfg.rope.type == "yarn" and cfg.rope.llama4_scaling_beta == 0.1
    assert nld_tiny.model.rotary.attention_factor == 1.0  # mscale == mscale_all_dim
    assert nld_tiny.model.adapter_names == [DRAFT_ADAPTER]


@pytest.mark.parametrize(
    "key, pattern, adapter",
    [
        ("forward.causal.logits", "causal", None),
        ("forward.bidirectional.logits", "bidirectional", None),
        ("forward.bidirectional_lora.logits", "bidirectional", DRAFT_ADAPTER),
    ],
)
def test_full_forwards(nld_tiny, tensors, key, pattern, adapter):
    ids = tensors["forward.input_ids"]
    logits = nld_tiny.model(ids, torch.arange(ids.shape[1])[None], pattern=pattern, adapter=adapter)
    assert (logits - tensors[key]).abs().max().item() < TOL


def test_adapter_changes_logits(nld_tiny, tensors):
    """Guard for the test above: the adapter is not a no-op on this fixture."""
    diff = tensors["forward.bidirectional_lora.logits"] - tensors["forward.bidirectional.logits"]
    assert diff.abs().max().item() > 0.1


def test_denoising_step_over_cached_prefix(nld_tiny, tensors):
    """Causal prefill of 16 tokens, then a read-only bidirectional block of 8 at positions 16..23."""
    model = nld_tiny.model
    ids = tensors["forward.input_ids"]
    cache = KVCache.for_model(model, 1, 32)
    prefill = model(ids[:, :16], cache=cache)
    cache.advance(16)
    block = tensors["forward.prefix16_block8_bidir.block_ids"]
    logits = model(block, torch.arange(16, 24)[None], cache, pattern="bidirectional")
    assert cache.lengths == [16]
    ref = tensors["forward.prefix16_block8_bidir.logits"]
    assert ref.shape == logits.shape == (1, 8, 512)
    assert (logits - ref).abs().max().item() < TOL
    assert (prefill - tensors["forward.causal.logits"][:, :16]).abs().max().item() < TOL


@pytest.mark.parametrize("case", ["t24", "t18", "t24_lossmask"])
def test_training_dual_stream_logits(nld_tiny, tensors, golden, case):
    """The dual-stream [x_t | x_0] forward with the block-diff mask (block 8) reproduces both halves."""
    meta = next(c for c in golden["training_forward"] if c["id"] == f"train/{case}")
    x0 = tensors[f"train.{case}.input_ids"]
    masked = tensors[f"train.{case}.masked_indices_after_call"].bool()
    length = x0.shape[1]
    xt = torch.where(masked, torch.full_like(x0, nld_tiny.config.mask_token_id), x0)
    ids = torch.cat([xt, x0], dim=1)
    positions = torch.arange(length).repeat(2)[None]
    logits = nld_tiny.model(ids, positions, pattern=masks.dual_stream(length, meta["block_size"]))
    assert (logits[:, :length] - tensors[f"train.{case}.logits"]).abs().max().item() < TOL
    assert (logits[:, length:] - tensors[f"train.{case}.causal_logits"]).abs().max().item() < TOL
