"""Logits parity with transformers on tiny random configs, with and without the KV cache."""

from __future__ import annotations

import pytest
import torch
import transformers

from trimode.cache import KVCache
from trimode.config import ModelConfig
from trimode.model import build_model

TOL = 1e-4

COMMON = dict(
    vocab_size=320,
    hidden_size=64,
    intermediate_size=112,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=4096,
    rms_norm_eps=1e-5,
)


def _families():
    t = transformers
    return {
        "llama": (t.LlamaConfig, t.LlamaForCausalLM, dict(tie_word_embeddings=False)),
        "llama-tied": (t.LlamaConfig, t.LlamaForCausalLM, dict(tie_word_embeddings=True)),
        "llama3-rope": (
            t.LlamaConfig,
            t.LlamaForCausalLM,
            dict(rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
                                      high_freq_factor=4.0, original_max_position_embeddings=64)),
        ),
        "mistral": (t.MistralConfig, t.MistralForCausalLM, dict(sliding_window=None)),
        "mistral-window": (t.MistralConfig, t.MistralForCausalLM, dict(sliding_window=7)),
        "qwen2": (t.Qwen2Config, t.Qwen2ForCausalLM, dict(tie_word_embeddings=True)),
        "qwen3": (t.Qwen3Config, t.Qwen3ForCausalLM, dict(tie_word_embeddings=False)),
        # Ministral-3 = the NLD backbone: YaRN with mscale == mscale_all_dim and the Llama-4 query
        # scale. original_max_position_embeddings is tiny here so the scale is exercised (> 1).
        "ministral3-yarn": (
            t.Ministral3Config,
            t.Ministral3ForCausalLM,
            dict(rope_parameters=dict(rope_type="yarn", rope_theta=1e6, factor=16.0, original_max_position_embeddings=8,
                                      beta_fast=32.0, beta_slow=1.0, mscale=1.0, mscale_all_dim=1.0,
                                      llama_4_scaling_beta=0.1), max_position_embeddings=128),
        ),
        # Plain YaRN (no mscale): the attention factor is 0.1 ln(factor) + 1, unlike NLD's 1.0.
        "qwen3-yarn": (
            t.Qwen3Config,
            t.Qwen3ForCausalLM,
            dict(rope_parameters=dict(rope_type="yarn", rope_theta=10000.0, factor=4.0,
                                      original_max_position_embeddings=32)),
        ),
    }


def make_pair(family: str, seed: int = 0):
    cfg_cls, model_cls, extra = _families()[family]
    torch.manual_seed(seed)
    hf_cfg = cfg_cls(**{**COMMON, **extra})
    hf_cfg._attn_implementation = "sdpa"
    hf = model_cls(hf_cfg).eval()
    with torch.no_grad():  # default init has zero biases and unit norms: perturb so they matter
        for name, p in hf.named_parameters():
            if name.endswith("norm.weight") or name.endswith(".bias"):
                p.add_(0.1 * torch.randn_like(p))
    ours = build_model(ModelConfig.from_hf(hf_cfg.to_dict()), hf.state_dict())
    return hf, ours


FAMILIES = list(_families())


@pytest.mark.parametrize("family", FAMILIES)
def test_full_forward_matches(family):
    hf, ours = make_pair(family)
    ids = torch.randint(0, COMMON["vocab_size"], (2, 21))
    with torch.no_grad():
        ref = hf(ids).logits
        got = ours(ids)
    assert (got - ref).abs().max().item() < TOL


@pytest.mark.parametrize("family", FAMILIES)
def test_cached_decoding_matches_full_forward(family):
    """Prefill 9 tokens, then feed chunks of 1, 3 and 1 tokens through the cache."""
    hf, ours = make_pair(family)
    ids = torch.randint(0, COMMON["vocab_size"], (1, 14))
    with torch.no_grad():
        ref = hf(ids).logits
        cache = KVCache.for_model(ours, 1, 32)
        pieces = []
        for start, stop in ((0, 9), (9, 10), (10, 13), (13, 14)):
            pieces.append(ours(ids[:, start:stop], cache=cache))
            cache.advance(stop - start)
    got = torch.cat(pieces, dim=1)
    assert (got - ref).abs().max().item() < TOL


@pytest.mark.parametrize("family", ["llama", "qwen3", "ministral3-yarn"])
def test_matches_transformers_own_cache(family):
    """Incremental decoding agrees with transformers' DynamicCache step by step."""
    hf, ours = make_pair(family)
    ids = torch.randint(0, COMMON["vocab_size"], (1, 12))
    with torch.no_grad():
        out = hf(ids[:, :8], use_cache=True)
        past = out.past_key_values
        cache = KVCache.for_model(ours, 1, 16)
        mine = ours(ids[:, :8], cache=cache, logits_at="last")
        cache.advance(8)
        assert (mine[:, -1] - out.logits[:, -1]).abs().max().item() < TOL
        for i in range(8, 12):
            out = hf(ids[:, i : i + 1], past_key_values=past, use_cache=True)
            past = out.past_key_values
            mine = ours(ids[:, i : i + 1], cache=cache)
            cache.advance(1)
            assert (mine[:, -1] - out.logits[:, -1]).abs().max().item() < TOL


def test_llama4_scale_is_active_in_ministral3_case():
    """Guard: the Ministral-3 case really reaches positions where the query scale differs from 1."""
    from trimode.model.rope import llama4_query_scale

    scale = llama4_query_scale(torch.arange(21), 0.1, 8)
    assert scale[7] == 1 and scale[20] > 1.1


def test_bfloat16_close_to_transformers():
    hf, ours = make_pair("llama")
    hf, ours = hf.to(torch.bfloat16), ours.to(torch.bfloat16)
    ids = torch.randint(0, COMMON["vocab_size"], (1, 16))
    with torch.no_grad():
        ref = hf(ids).logits.float()
        got = ours(ids)
    # Loose: bf16 has ~3 significant digits; this only catches real mistakes (wrong casts, wrong ops).
    assert (got - ref).abs().max().item() < 0.05 * ref.abs().max().item()
