"""Rotary position embeddings: inverse frequencies per variant, cos/sin for explicit positions.

Variants follow the published definitions (and transformers' numerics, which the parity tests pin):
``default`` / ``linear`` (positions divided by ``factor``), ``llama3`` (per-band frequency
smoothing) and ``yarn`` (NTK-by-parts ramp plus an attention factor). The Ministral-3 / Llama-4
query scale is folded into the query's cos/sin so it costs nothing per layer.
"""

from __future__ import annotations

import math

import torch

from ..config import RopeConfig


def inv_freq_and_attention_factor(rope: RopeConfig, head_dim: int) -> tuple[torch.Tensor, float]:
    """Inverse frequencies (float32, length head_dim/2) and the cos/sin magnitude factor."""
    exponent = torch.arange(0, head_dim, 2, dtype=torch.int64).to(torch.float32) / head_dim
    base = 1.0 / (rope.theta**exponent)
    if rope.type == "default":
        return base, 1.0
    if rope.type == "linear":
        return base / rope.factor, 1.0
    if rope.type == "llama3":
        return _llama3(base, rope), 1.0
    if rope.type == "yarn":
        return _yarn(rope, head_dim)
    raise ValueError(f"unsupported RoPE type {rope.type!r}")


def _llama3(inv_freq: torch.Tensor, rope: RopeConfig) -> torch.Tensor:
    if rope.original_max_position_embeddings is None:
        raise ValueError("llama3 RoPE needs original_max_position_embeddings")
    old_len = rope.original_max_position_embeddings
    low_wavelen = old_len / rope.low_freq_factor
    high_wavelen = old_len / rope.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    # Long wavelengths are interpolated, short ones kept, the band between blended linearly.
    scaled = torch.where(wavelen > low_wavelen, inv_freq / rope.factor, inv_freq)
    smooth = (old_len / wavelen - rope.low_freq_factor) / (rope.high_freq_factor - rope.low_freq_factor)
    blended = (1 - smooth) * scaled / rope.factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return torch.where(medium, blended, scaled)


def _yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def yarn_attention_factor(rope: RopeConfig) -> float:
    """YaRN's cos/sin magnitude. With mscale == mscale_all_dim (the NLD configs) this is exactly 1."""
    if rope.attention_factor is not None:
        return float(rope.attention_factor)
    if rope.mscale and rope.mscale_all_dim:
        return _yarn_mscale(rope.factor, rope.mscale) / _yarn_mscale(rope.factor, rope.mscale_all_dim)
    return _yarn_mscale(rope.factor)


def _yarn(rope: RopeConfig, head_dim: int) -> tuple[torch.Tensor, float]:
    if rope.original_max_position_embeddings is None:
        raise ValueError("yarn RoPE needs original_max_position_embeddings")
    dim = head_dim
    theta = rope.theta

    def correction_dim(rotations: float) -> float:
        return dim * math.log(rope.original_max_position_embeddings / (rotations * 2 * math.pi)) / (
            2 * math.log(theta)
        )

    low, high = correction_dim(rope.beta_fast), correction_dim(rope.beta_slow)
    if rope.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # avoid a zero-width ramp
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    pos_freqs = theta ** (torch.arange(0, dim, 2).to(torch.float32) / dim)
    extrapolation = 1.0 / pos_freqs
    interpolation = 1.0 / (rope.factor * pos_freqs)
    keep = 1 - ramp  # 1 where the original frequency is kept (high-frequency dims)
    inv_freq = interpolation * (1 - keep) + extrapolation * keep
    return inv_freq, yarn_attention_factor(rope)


class RotaryEmbedding(torch.nn.Module):
    """Computes cos/sin for arbitrary position ids; no table, so any position up to 2**24 is exact."""

    def __init__(self, rope: RopeConfig, head_dim: int) -> None:
        super().__init__()
        inv_freq, factor = inv_freq_and_attention_factor(rope, head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.attention_factor = factor
        self.llama4_beta = rope.llama4_scaling_beta
        self.llama4_original = rope.original_max_position_embeddings

    def forward(
        self, positions: torch.Tensor, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """cos and signed sin for keys and for queries, shaped [B, T, 1, head_dim] to broadcast over
        the heads of a [B, T, heads, head_dim] tensor (see :func:`apply_rotary`).

        The query pair carries the Llama-4 scale 1 + beta*ln(1 + floor(pos/original)) (exactly 1
        below ``original``), because scaling q after rotation equals rotating with scaled cos/sin.
        Without that scale the query pair *is* the key pair (same objects).
        """
        freqs = positions.to(torch.float32)[..., None] * self.inv_freq.to(positions.device)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos(), emb.sin()
        if self.attention_factor != 1.0:
            cos, sin = cos * self.attention_factor, sin * self.attention_factor
        half = sin.shape[-1] // 2
        sin = torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)
        cos_k, sin_k = cos.to(dtype)[:, :, None], sin.to(dtype)[:, :, None]
        if self.llama4_beta is None:
            return cos_k, sin_k, cos_k, sin_k
        scale = llama4_query_scale(positions, self.llama4_beta, self.llama4_original)[..., None]
        # HF rounds the scale to the model dtype before multiplying; so do we.
        scale = scale.to(dtype).to(torch.float32)
        return cos_k, sin_k, (cos * scale).to(dtype)[:, :, None], (sin * scale).to(dtype)[:, :, None]


def llama4_query_scale(positions: torch.Tensor, beta: float, original: int) -> torch.Tensor:
    return 1 + beta * torch.log(1 + torch.floor(positions.to(torch.float32) / original))


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE: x*cos + rotate_half(x)*sin, where rotate_half(x) = [-x2, x1].

    ``signed_sin`` carries the minus sign of the first half, so rotate_half becomes a plain roll
    (one kernel instead of slice/neg/cat); the sign flip is exact, so results are bit-identical.
    """
    return x * cos + torch.roll(x, x.shape[-1] // 2, dims=-1) * signed_sin
