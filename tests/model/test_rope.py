"""trimode.model.rope: inverse frequencies per RoPE variant (hand-computed), the attention factor,
the Llama-4 query scale, and the rotation itself."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from trimode.config import RopeConfig, preset
from trimode.model.rope import (
    RotaryEmbedding,
    apply_rotary,
    inv_freq_and_attention_factor,
    llama4_query_scale,
)


def test_rope_attention_factors():
    nld = preset("nld-8b").rope
    assert inv_freq_and_attention_factor(nld, 128)[1] == 1.0
    plain = RopeConfig(type="yarn", theta=1e4, factor=4.0, original_max_position_embeddings=32)
    assert inv_freq_and_attention_factor(plain, 16)[1] == pytest.approx(0.1 * math.log(4.0) + 1)
    with pytest.raises(ValueError, match="unsupported RoPE type"):
        RopeConfig(type="dynamic")


def test_default_and_linear_frequencies():
    # head_dim 4: exponents 0 and 2/4, so 1 / 10000**[0, 0.5] = [1, 0.01]
    inv, factor = inv_freq_and_attention_factor(RopeConfig(theta=10000.0), 4)
    assert inv.dtype == torch.float32 and inv.tolist() == pytest.approx([1.0, 0.01]) and factor == 1.0
    inv, factor = inv_freq_and_attention_factor(RopeConfig(type="linear", theta=10000.0, factor=4.0), 4)
    assert inv.tolist() == pytest.approx([0.25, 0.0025]) and factor == 1.0


def test_llama3_bands():
    # Wavelengths 2*pi (short) and 200*pi ~ 628 (long) against original 100: low_wavelen 100, high 25.
    rope = RopeConfig(type="llama3", theta=10000.0, factor=8.0, original_max_position_embeddings=100)
    inv, _ = inv_freq_and_attention_factor(rope, 4)
    assert inv.tolist() == pytest.approx([1.0, 0.01 / 8])  # short kept, long interpolated
    # Original 1000: the long wavelength falls between high (250) and low (1000) and is blended,
    # smooth = (1000 / 628.3 - 1) / 3 = 0.19718: 0.80282 * 0.00125 + 0.19718 * 0.01
    inv, _ = inv_freq_and_attention_factor(dataclasses.replace(rope, original_max_position_embeddings=1000), 4)
    assert inv.tolist() == pytest.approx([1.0, 0.0029753525], rel=1e-6)
    with pytest.raises(ValueError, match="llama3 RoPE needs original_max_position_embeddings"):
        inv_freq_and_attention_factor(RopeConfig(type="llama3", factor=8.0), 4)


def test_yarn_ramp():
    # head_dim 16, theta 1e4, original 32: correction dims -1.60 (beta_fast 32) and 1.41 (beta_slow 1),
    # truncated to [0, 2]; the ramp over the 8 frequencies is [0, 0.5, 1, 1, ...].
    rope = RopeConfig(type="yarn", theta=1e4, factor=4.0, original_max_position_embeddings=32)
    inv, _ = inv_freq_and_attention_factor(rope, 16)
    base = [1e4 ** (-2 * i / 16) for i in range(8)]
    assert inv[0].item() == pytest.approx(1.0)  # fastest frequency kept
    assert inv[1].item() == pytest.approx(0.19764235, rel=1e-6)  # half kept, half interpolated: 0.316228 * 0.625
    assert inv[2:].tolist() == pytest.approx([b / 4 for b in base[2:]], rel=1e-6)  # the rest interpolated
    with pytest.raises(ValueError, match="yarn RoPE needs original_max_position_embeddings"):
        inv_freq_and_attention_factor(RopeConfig(type="yarn", factor=4.0), 16)


def test_yarn_attention_factor_choices():
    given = RopeConfig(type="yarn", factor=4.0, original_max_position_embeddings=32, attention_factor=0.5)
    assert inv_freq_and_attention_factor(given, 16)[1] == 0.5
    no_scaling = RopeConfig(type="yarn", factor=1.0, original_max_position_embeddings=32)
    assert inv_freq_and_attention_factor(no_scaling, 16)[1] == 1.0
    # mscale 2, mscale_all_dim 1 at factor e: (0.2 + 1) / (0.1 + 1)
    ratio = RopeConfig(type="yarn", factor=math.e, original_max_position_embeddings=32, mscale=2.0, mscale_all_dim=1.0)
    assert inv_freq_and_attention_factor(ratio, 16)[1] == pytest.approx(1.2 / 1.1)


def test_llama4_query_scale_steps_every_original_positions():
    scale = llama4_query_scale(torch.tensor([0, 7, 8, 15, 16, 24]), 0.1, 8)
    expected = [1.0, 1.0, 1 + 0.1 * math.log(2), 1 + 0.1 * math.log(2), 1 + 0.1 * math.log(3), 1 + 0.1 * math.log(4)]
    assert scale.tolist() == pytest.approx(expected)


def test_rotation_by_position_in_the_rotate_half_layout():
    # head_dim 4, theta 1e4: dims (0, 2) turn at 1 rad per position, dims (1, 3) at 0.01 rad.
    rotary = RotaryEmbedding(RopeConfig(theta=10000.0), 4)
    positions = torch.tensor([[0, 1, 3]])
    cos, sin, cos_q, sin_q = rotary(positions, torch.float32)
    assert cos.shape == sin.shape == (1, 3, 1, 4)
    assert cos_q is cos and sin_q is sin  # no query scale: the query pair is the key pair
    x = torch.tensor([1.0, 2.0, 0.0, 0.0]).expand(1, 3, 1, 4)
    out = apply_rotary(x, cos, sin)[0, :, 0]
    for row, p in zip(out.tolist(), (0, 1, 3)):
        a, b = p * 1.0, p * 0.01  # (x0, x2) = (1, 0) turned by a; (x1, x3) = (2, 0) turned by b
        assert row == pytest.approx([math.cos(a), 2 * math.cos(b), math.sin(a), 2 * math.sin(b)], abs=1e-6)


def test_scores_depend_only_on_the_distance():
    rotary = RotaryEmbedding(RopeConfig(theta=10000.0), 8)
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 1, 8, generator=gen), torch.randn(1, 1, 1, 8, generator=gen)

    def score(m: int, n: int) -> float:
        cos, sin, _, _ = rotary(torch.tensor([[m, n]]), torch.float32)
        rq = apply_rotary(q, cos[:, :1], sin[:, :1])
        rk = apply_rotary(k, cos[:, 1:], sin[:, 1:])
        return (rq * rk).sum().item()

    assert score(3, 1) == pytest.approx(score(103, 101), abs=1e-4)
    assert score(3, 1) != pytest.approx(score(3, 2), abs=1e-3)
    q_norm = apply_rotary(q, *rotary(torch.tensor([[57]]), torch.float32)[:2]).norm().item()
    assert q_norm == pytest.approx(q.norm().item(), rel=1e-6)  # a rotation keeps the length


def test_llama4_scale_is_folded_into_the_query_pair():
    rope = RopeConfig(theta=10000.0, original_max_position_embeddings=8, llama4_scaling_beta=0.1)
    cos, sin, cos_q, sin_q = RotaryEmbedding(rope, 4)(torch.tensor([[3, 8]]), torch.float32)
    assert torch.equal(cos_q[:, 0], cos[:, 0]) and torch.equal(sin_q[:, 0], sin[:, 0])  # scale 1 below 8
    s = 1 + 0.1 * math.log(2)
    assert torch.allclose(cos_q[:, 1], cos[:, 1] * s) and torch.allclose(sin_q[:, 1], sin[:, 1] * s)
