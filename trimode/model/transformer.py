"""The decoder: Llama/Mistral/Ministral-3/Qwen2/Qwen3 family in plain PyTorch.

Every forward takes explicit position ids and an explicit attention pattern (``"causal"``,
``"bidirectional"`` or a boolean [T, T] / [B, T, T] mask over the call's own tokens, see
:mod:`trimode.masks`), an optional KV cache, and an optional adapter name. The same weights thus
serve AR decoding, diffusion denoising over a cached prefix, drafting and grid verification.

q/k/v and gate/up are stored fused (one matmul each, which matters at batch 1 on CPU);
:mod:`trimode.model.weights` maps to and from the Hugging Face per-projection names.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn
from torch.nn.attention.flex_attention import BlockMask, flex_attention

from .. import masks
from ..cache import KVCache
from ..config import ModelConfig
from .layers import Linear, PackedWeight, RMSNorm, linear
from .rope import RotaryEmbedding, apply_rotary

# "causal" | "bidirectional" | bool mask [T, T] or [B, T, T] | a flex-attention BlockMask (no cache)
Pattern = str | torch.Tensor | BlockMask


@dataclass
class _AttnContext:
    """What every layer of one forward shares: where K/V go and who sees whom."""

    cache: KVCache | None
    mask: torch.Tensor | None
    is_causal: bool
    attn_dtype: torch.dtype
    cos_k: torch.Tensor
    sin_k: torch.Tensor
    cos_q: torch.Tensor
    sin_q: torch.Tensor
    flex: Callable | None = None  # flex_attention with the BlockMask bound (training masks on CUDA)
    # [B, T, 1] float, 1 where the adapter's update applies (None: at every token). Lets one forward
    # mix adapter-off tokens (verifier heads of a quadratic grid) with adapter-on ones (its masks).
    adapter_gate: torch.Tensor | None = None


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_heads, self.n_kv, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.q_size, self.kv_size = cfg.q_size, cfg.kv_size
        self.qkv_proj = Linear(cfg.hidden_size, self.q_size + 2 * self.kv_size, bias=cfg.attention_bias)
        self.o_proj = Linear(self.q_size, cfg.hidden_size)
        self.q_norm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps) if cfg.qk_norm else None
        self.k_norm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps) if cfg.qk_norm else None

    def forward(self, x: torch.Tensor, ctx: _AttnContext, layer: int, adapter: str | None) -> torch.Tensor:
        b, t, _ = x.shape
        h, hkv = self.n_heads, self.n_kv
        qkv = self.qkv_proj(x, adapter, ctx.adapter_gate).view(b, t, h + 2 * hkv, self.head_dim)
        qk, v = qkv[:, :, : h + hkv], qkv[:, :, h + hkv :]
        if self.q_norm is not None:
            qk = torch.cat([self.q_norm(qk[:, :, :h]), self.k_norm(qk[:, :, h:])], dim=2)
        qk, v = qk.to(ctx.attn_dtype), v.to(ctx.attn_dtype)
        # Rotate q and k in one go when they share cos/sin (no Llama-4 query scale): fewer kernels
        # per layer, which is what batch-1 decoding on a CPU pays for.
        if ctx.cos_q is ctx.cos_k:
            qk = apply_rotary(qk, ctx.cos_k, ctx.sin_k)
            q, k = qk[:, :, :h], qk[:, :, h:]
        else:
            q = apply_rotary(qk[:, :, :h], ctx.cos_q, ctx.sin_q)
            k = apply_rotary(qk[:, :, h:], ctx.cos_k, ctx.sin_k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if ctx.cache is not None:
            k, v = ctx.cache.write(layer, k, v)
        if ctx.flex is not None:
            out = ctx.flex(q, k, v, enable_gqa=h != hkv)
        else:
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=ctx.mask, is_causal=ctx.is_causal, enable_gqa=h != hkv
            )
        out = out.transpose(1, 2).reshape(b, t, self.q_size).to(x.dtype)
        return self.o_proj(out, adapter, ctx.adapter_gate)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.intermediate = cfg.intermediate_size
        self.gate_up_proj = Linear(cfg.hidden_size, 2 * cfg.intermediate_size)
        self.down_proj = Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor, adapter: str | None, adapter_gate: torch.Tensor | None = None) -> torch.Tensor:
        gate, up = self.gate_up_proj(x, adapter, adapter_gate).split(self.intermediate, dim=-1)
        return self.down_proj(F.silu(gate) * up, adapter, adapter_gate)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, ctx: _AttnContext, layer: int, adapter: str | None) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), ctx, layer, adapter)
        return x + self.mlp(self.post_attention_layernorm(x), adapter, ctx.adapter_gate)


class Backbone(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.model = Backbone(cfg)
        self.lm_head = None if cfg.tie_word_embeddings else Linear(cfg.hidden_size, cfg.vocab_size)
        self.rotary = RotaryEmbedding(cfg.rope, cfg.head_dim)
        self._packed_head: PackedWeight | None = None
        # Training only: recompute each layer's activations in the backward pass instead of storing them.
        self.gradient_checkpointing = False
        self._compiled_flex: Callable | None = None

    def pack_weights(self, kernel: str = "auto") -> int:
        """Prepack every projection (and a tied head) for CPU float32 inference with ``kernel`` (see
        :mod:`trimode.model.kernels`; ``plain`` drops the packed copies); returns how many weights
        were packed (0 off CPU or in other dtypes). Costs one extra copy of those weights."""
        count = sum(m.pack(kernel) for m in self.modules() if isinstance(m, Linear))
        emb = self.model.embed_tokens.weight
        use = kernel != "plain" and self.lm_head is None and PackedWeight.supported(emb)
        self._packed_head = PackedWeight(emb, kernel) if use else None
        return count + use

    @property
    def kernel(self) -> str:
        """The matmul kernel the projections run on: ``trimode``, ``onednn`` or ``plain``."""
        packed = next((m.packed for m in self.modules() if isinstance(m, Linear) and m.packed is not None), None)
        return packed.kernel if packed is not None else "plain"

    @property
    def packed(self) -> bool:
        return self._packed_head is not None or any(
            m.packed is not None for m in self.modules() if isinstance(m, Linear)
        )

    @property
    def adapter_names(self) -> list[str]:
        names: set[str] = set()
        for module in self.modules():
            if isinstance(module, Linear):
                names.update(module.adapters.keys())
        return sorted(names)

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor | None = None,
        cache: KVCache | None = None,
        *,
        pattern: Pattern = "causal",
        adapter: str | None = None,
        adapter_gate: torch.Tensor | None = None,
        logits_at: torch.Tensor | str | None = None,
    ) -> torch.Tensor:
        """Logits [B, K, vocab] (float32) for the positions selected by ``logits_at``.

        input_ids, positions: [B, T]; positions default to cached length + 0..T-1 of each row.
        With a cache, the new K/V are written after each row's cached tokens but the cache lengths
        are NOT advanced: call ``cache.advance(...)`` to append, or leave it for a read-only pass.
        ``logits_at``: None = every position; ``"last"`` = position T-1; or indices [B, K].
        """
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, tokens], got shape {tuple(input_ids.shape)}")
        b, t = input_ids.shape
        if cache is not None and cache.batch != b:
            raise ValueError(f"cache holds {cache.batch} rows but input_ids has {b}")
        if positions is None:
            base = cache.lens[:, None] if cache is not None else torch.zeros(b, 1, dtype=torch.long)
            positions = base.to(input_ids.device) + torch.arange(t, device=input_ids.device)
        hidden = self.hidden_states(input_ids, positions, cache, pattern=pattern, adapter=adapter, adapter_gate=adapter_gate)
        if logits_at is not None:
            if isinstance(logits_at, str):
                if logits_at != "last":
                    raise ValueError(f"logits_at must be None, 'last' or an index tensor, got {logits_at!r}")
                hidden = hidden[:, -1:]
            else:
                idx = logits_at.to(hidden.device)
                hidden = torch.gather(hidden, 1, idx[..., None].expand(b, idx.shape[1], hidden.shape[-1]))
        return self.logits(hidden)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.lm_head is None:
            return linear(hidden, self.model.embed_tokens.weight, None, self._packed_head).float()
        return self.lm_head(hidden).float()

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        cache: KVCache | None = None,
        *,
        pattern: Pattern = "causal",
        adapter: str | None = None,
        adapter_gate: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Final-norm hidden states [B, T, hidden]; see :meth:`forward`. ``adapter_gate`` [B, T]
        (bool) limits the adapter to the tokens where it is True."""
        x = self.model.embed_tokens(input_ids)
        x = self.layer_states(x, positions, cache, pattern=pattern, adapter=adapter, adapter_gate=adapter_gate)
        return self.model.norm(x)

    def layer_states(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        cache: KVCache | None = None,
        *,
        pattern: Pattern = "causal",
        adapter: str | None = None,
        adapter_gate: torch.Tensor | None = None,
        start: int = 0,
        stop: int | None = None,
    ) -> torch.Tensor:
        """The residual stream [B, T, hidden] after layers ``start..stop-1`` (no final norm), given
        its value ``x`` before layer ``start``. Cache layers outside the range are not touched:
        a drafter trained only on the upper layers runs its frozen lower layers once, without grad."""
        attn_dtype = cache.dtype if cache is not None else x.dtype
        if cache is not None:
            cache.ensure_capacity(max(cache.lengths) + x.shape[1])
        flex = None
        if isinstance(pattern, BlockMask):
            if cache is not None:
                raise ValueError("a flex-attention BlockMask pattern is for cache-free (training) forwards")
            flex = functools.partial(self._flex_attention(x.device), block_mask=pattern)
            mask, is_causal = None, False
        else:
            mask, is_causal = self._mask(pattern, positions, cache)
        if adapter_gate is not None:
            if adapter_gate.shape != x.shape[:2]:
                raise ValueError(f"adapter_gate must be [batch, tokens] = {tuple(x.shape[:2])}, got {tuple(adapter_gate.shape)}")
            adapter_gate = adapter_gate.to(x.device, x.dtype)[..., None]
        cos_k, sin_k, cos_q, sin_q = self.rotary(positions, attn_dtype)
        ctx = _AttnContext(cache, mask, is_causal, attn_dtype, cos_k, sin_k, cos_q, sin_q, flex, adapter_gate)
        recompute = self.gradient_checkpointing and torch.is_grad_enabled()
        layers = self.model.layers
        for i in range(start, len(layers) if stop is None else stop):
            if recompute:
                x = torch.utils.checkpoint.checkpoint(layers[i], x, ctx, i, adapter, use_reentrant=False)
            else:
                x = layers[i](x, ctx, i, adapter)
        return x

    def _flex_attention(self, device: torch.device) -> Callable:
        """flex_attention, compiled on CUDA (its fast path; compiled once per model), eager elsewhere
        (correct but slow: CPU training uses boolean SDPA masks instead)."""
        if device.type != "cuda":
            return flex_attention
        if self._compiled_flex is None:
            self._compiled_flex = torch.compile(flex_attention, dynamic=False)
        return self._compiled_flex

    def _mask(
        self, pattern: Pattern, positions: torch.Tensor, cache: KVCache | None
    ) -> tuple[torch.Tensor | None, bool]:
        """The SDPA mask for this forward; None (plus is_causal) whenever SDPA can do without one."""
        b, t = positions.shape
        device = positions.device
        if isinstance(pattern, str) and pattern not in ("causal", "bidirectional"):
            raise ValueError(f"unknown attention pattern {pattern!r}; expected 'causal', 'bidirectional' or a mask")
        window = self.config.sliding_window
        past = max(cache.lengths) if cache is not None else 0
        if isinstance(pattern, torch.Tensor) and past and pattern.shape[-2:] == (t, past + t):
            return self._full_mask(pattern, cache, b, t)
        if isinstance(pattern, torch.Tensor) and (pattern.dtype != torch.bool or pattern.shape[-2:] != (t, t)):
            raise ValueError(
                f"attention mask must be bool [{t}, {t}] or [B, {t}, {t}] (or [{t}, {past + t}] over cache + new), "
                f"got {pattern.dtype} {tuple(pattern.shape)}"
            )
        windowed = window is not None and past + t > window
        if not windowed and isinstance(pattern, str) and (cache is None or cache.uniform):
            if pattern == "bidirectional":
                return None, False
            if past == 0:
                return None, t > 1
            if t == 1:
                return None, False
        intra = pattern if isinstance(pattern, torch.Tensor) else (
            masks.causal(t, device) if pattern == "causal" else masks.bidirectional(t, device)
        )
        if cache is None:
            lens = torch.zeros(b, dtype=torch.long, device=device)
            return masks.over_cache(intra, lens, t, q_positions=positions, window=window if windowed else None), False
        return (
            masks.over_cache(intra, cache.lens, past + t, q_positions=positions, window=window if windowed else None),
            False,
        )

    def _full_mask(self, pattern: torch.Tensor, cache: KVCache, b: int, t: int) -> tuple[torch.Tensor, bool]:
        """A mask that also decides which cached slots each query sees (training a drafter over a
        verifier's cache: a draft block must not see the cached tokens of its own or later blocks)."""
        if pattern.dtype != torch.bool:
            raise ValueError(f"attention mask must be bool, got {pattern.dtype}")
        if not cache.uniform:
            raise ValueError(f"a [T, cache + T] mask needs equal cached lengths per row, got {cache.lengths}")
        if self.config.sliding_window is not None and pattern.shape[-1] > self.config.sliding_window:
            raise ValueError("a [T, cache + T] mask cannot be combined with an active sliding window")
        return pattern.to(cache.device).expand(b, t, pattern.shape[-1])[:, None], False
