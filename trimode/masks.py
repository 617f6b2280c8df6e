"""Attention patterns as pure functions returning boolean masks (True = may attend).

The "intra" masks describe how the tokens of one forward see each other ([T, T], query rows, key
columns). :func:`over_cache` lays such a mask over a KV-cache buffer in which every row of the
batch has its own cached length: each query sees its row's whole cached prefix, plus the new tokens
its intra mask allows. Decoders pick a pattern; the model never needs to know which mode it serves.
"""

from __future__ import annotations

import torch


def causal(n: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Token-level causal: query i sees keys 0..i."""
    return torch.ones(n, n, dtype=torch.bool, device=device).tril()


def bidirectional(n: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Every token sees every token (a diffusion block over a cached prefix)."""
    return torch.ones(n, n, dtype=torch.bool, device=device)


def known_then_block(n: int, known: int, device: torch.device | str | None = None) -> torch.Tensor:
    """A block whose first ``known`` slots are causal (they see only known slots up to themselves,
    exactly as an AR forward would) and whose other slots see the whole block: the draft block
    [seed, MASK x (n-1)] of a "masks"-scoped drafting adapter."""
    mask = torch.ones(n, n, dtype=torch.bool, device=device)
    mask[:known] = causal(n, device)[:known]
    return mask


def block_of(index: torch.Tensor, block: int) -> torch.Tensor:
    return torch.div(index, block, rounding_mode="floor")


def dual_stream(length: int, block: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Training mask over [x_t | x_0] (2L tokens; both halves use positions 0..L-1).

    noisy->noisy: same block (bidirectional); noisy->clean: strictly earlier block;
    clean->clean: token-level causal (so the clean half is an exact AR model); clean never sees noisy.
    """
    idx = torch.arange(2 * length, device=device)
    noisy = idx < length
    pos = torch.where(noisy, idx, idx - length)
    blk = block_of(pos, block)
    qn, kn = noisy[:, None], noisy[None, :]
    qb, kb = blk[:, None], blk[None, :]
    same_noisy_block = qn & kn & (qb == kb)
    noisy_sees_clean = qn & ~kn & (qb > kb)
    clean_causal = ~qn & ~kn & (pos[:, None] >= pos[None, :])
    return same_noisy_block | noisy_sees_clean | clean_causal


def dual_stream_block_mask(length: int, block: int, device: torch.device | str = "cuda"):
    """:func:`dual_stream` as a flex-attention ``BlockMask``: fully masked tiles are skipped, which
    is what makes the 2L-token training forward cheap on a GPU."""
    from torch.nn.attention.flex_attention import create_block_mask

    def allowed(b, h, q, k):
        qn, kn = q < length, k < length
        qp, kp = torch.where(qn, q, q - length), torch.where(kn, k, k - length)
        qb, kb = qp // block, kp // block
        return (qn & kn & (qb == kb)) | (qn & ~kn & (qb > kb)) | (~qn & ~kn & (qp >= kp))

    return create_block_mask(allowed, None, None, 2 * length, 2 * length, device=device)


def quadratic_grid(block: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The B x (B+1) self-speculation grid, flattened row-major: row i is [d_i, MASK x B].

    Heads (column 0) are causal among themselves in row order, so head i is an exact AR query on
    d_0..d_i; a mask token of row i sees heads 0..i and every token of its own row, i.e. a
    diffusion block conditioned on "d_0..d_i accepted".
    """
    width = block + 1
    idx = torch.arange(block * width, device=device)
    row, col = torch.div(idx, width, rounding_mode="floor"), idx % width
    key_is_head = (col == 0)[None, :]
    head_causal = key_is_head & (row[None, :] <= row[:, None])
    own_row = (col > 0)[:, None] & (row[None, :] == row[:, None])
    return head_causal | own_row


def quadratic_grid_positions(start: int | torch.Tensor, block: int) -> torch.Tensor:
    """Positions of the grid tokens: row i column j sits at start + i + j."""
    width = block + 1
    idx = torch.arange(block * width)
    offsets = torch.div(idx, width, rounding_mode="floor") + idx % width
    return offsets + start


def over_cache(
    intra: torch.Tensor,
    cache_lens: torch.Tensor,
    kv_len: int,
    *,
    q_positions: torch.Tensor | None = None,
    window: int | None = None,
) -> torch.Tensor:
    """Full mask [B, 1, T, kv_len] for a cache buffer whose row b holds ``cache_lens[b]`` tokens.

    The forward's T new tokens occupy buffer slots cache_lens[b] .. cache_lens[b]+T-1 of row b;
    slots beyond are stale and never visible. ``intra`` is [T, T] or [B, T, T]. With ``window``
    (sliding-window attention), a key is also hidden when it lies ``window`` or more positions
    behind the query; cached slot j holds position j, new tokens carry ``q_positions``.
    """
    batch = cache_lens.shape[0]
    t = intra.shape[-1]
    device = cache_lens.device
    slots = torch.arange(kv_len, device=device)
    rel = slots[None, :] - cache_lens[:, None]  # [B, S]: <0 cached, 0..T-1 new
    cached = rel < 0
    is_new = (rel >= 0) & (rel < t)
    intra_b = intra.to(device).expand(batch, t, t)
    gathered = torch.gather(intra_b, 2, rel.clamp(0, t - 1)[:, None, :].expand(batch, t, kv_len))
    mask = cached[:, None, :] | (gathered & is_new[:, None, :])
    if window is not None:
        if q_positions is None:
            raise ValueError("a sliding window needs the query positions")
        new_pos = torch.gather(q_positions, 1, rel.clamp(0, t - 1))
        k_pos = torch.where(cached, slots[None, :], new_pos)  # [B, S]
        mask = mask & ((q_positions[:, :, None] - k_pos[:, None, :]) < window)
    return mask[:, None]
