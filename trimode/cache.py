"""Preallocated KV cache with per-row lengths, append, crop/rollback and read-only forwards.

Layout: one buffer per layer, [batch, kv_heads, capacity, head_dim]. Row b holds ``lens[b]``
valid tokens; slot j of a row always holds the token at absolute position j, i.e. exactly what a
pure AR run would have stored. A forward writes its T new keys/values at slots
lens[b]..lens[b]+T-1 of each row and attends over the buffer; whether those slots become part of
the cache is decided afterwards by :meth:`KVCache.advance` (append) or by leaving ``lens`` alone
(read-only: a diffusion denoising step or a draft). Stale slots beyond ``lens`` are never visible
(see :func:`trimode.masks.over_cache`), so "rollback" is only a change of ``lens``.

Rows can join and leave between forwards (continuous batching): :meth:`KVCache.add_rows` appends
the rows of another cache (a prefill done on its own), :meth:`KVCache.remove_rows` drops rows by
moving the last rows into the holes, so a departure copies one row instead of the whole batch.
Buffers keep spare row slots (grown by doubling), so a join rarely reallocates.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class KVCache:
    def __init__(
        self,
        num_layers: int,
        batch: int,
        kv_heads: int,
        head_dim: int,
        capacity: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        if capacity <= 0 or batch <= 0:
            raise ValueError(f"cache needs positive batch and capacity, got batch={batch} capacity={capacity}")
        self.num_layers, self.batch, self.kv_heads, self.head_dim = num_layers, batch, kv_heads, head_dim
        self.dtype, self.device = dtype, torch.device(device)
        self.capacity = capacity
        self.slots = batch  # rows allocated; ``batch`` of them are in use (forwards see only those)
        shape = (batch, kv_heads, capacity, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=self.device) for _ in range(num_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=self.device) for _ in range(num_layers)]
        # Host copy decides shapes and fast paths without a device sync; the tensor feeds masks.
        self._lens: list[int] = [0] * batch
        self.lens = torch.zeros(batch, dtype=torch.long, device=self.device)

    @classmethod
    def for_model(cls, model: torch.nn.Module, batch: int, capacity: int, dtype: torch.dtype | None = None) -> "KVCache":
        cfg = model.config
        param = next(model.parameters())
        return cls(
            cfg.num_hidden_layers,
            batch,
            cfg.num_key_value_heads,
            cfg.head_dim,
            capacity,
            dtype=dtype or default_kv_dtype(param.dtype, param.device),
            device=param.device,
        )

    # ----------------------------------------------------------------- lengths
    @property
    def lengths(self) -> list[int]:
        return list(self._lens)

    @property
    def uniform(self) -> bool:
        return not self._lens or min(self._lens) == max(self._lens)

    def _set_lens(self, lens: Sequence[int]) -> None:
        self._lens = [int(x) for x in lens]
        self.lens = torch.tensor(self._lens, dtype=torch.long, device=self.device)

    def advance(self, counts: int | Sequence[int]) -> None:
        """Make the last forward's first ``counts[b]`` new tokens of row b part of the cache."""
        if isinstance(counts, int):
            counts = [counts] * self.batch
        new = [n + c for n, c in zip(self._lens, counts)]
        if max(new) > self.capacity:
            raise ValueError(f"advance to {max(new)} exceeds the cache capacity {self.capacity}")
        self._set_lens(new)

    def crop(self, lens: int | Sequence[int]) -> None:
        """Roll rows back to the given lengths (each must not exceed the current length)."""
        if isinstance(lens, int):
            lens = [lens] * self.batch
        if len(lens) != self.batch:
            raise ValueError(f"crop needs {self.batch} lengths, got {len(lens)}")
        for b, (old, new) in enumerate(zip(self._lens, lens)):
            if not 0 <= new <= old:
                raise ValueError(f"crop row {b} to {new}: must be within 0..{old} (its current length)")
        self._set_lens(lens)

    def ensure_capacity(self, needed: int) -> None:
        """Grow (by doubling) so that ``needed`` slots fit; existing content is kept."""
        if needed <= self.capacity:
            return
        self._reallocate(self.slots, max(needed, 2 * self.capacity))

    def _reallocate(self, slots: int, capacity: int) -> None:
        used = max(self._lens, default=0)
        for store in (self.k, self.v):
            for i, buf in enumerate(store):
                grown = torch.zeros((slots, self.kv_heads, capacity, self.head_dim), dtype=self.dtype, device=self.device)
                grown[: self.batch, :, :used] = buf[: self.batch, :, :used]
                store[i] = grown
        self.slots, self.capacity = slots, capacity

    # ----------------------------------------------------------------- rows joining and leaving
    def add_rows(self, other: "KVCache") -> None:
        """Append ``other``'s rows (with their cached tokens) after this cache's rows."""
        if (other.num_layers, other.kv_heads, other.head_dim, other.dtype) != (
            self.num_layers, self.kv_heads, self.head_dim, self.dtype
        ):
            raise ValueError("add_rows needs a cache of the same model and dtype")
        n, k = self.batch, other.batch
        used = max(other._lens, default=0)
        if n + k > self.slots or used > self.capacity:
            self._reallocate(max(n + k, 2 * self.slots if n + k > self.slots else self.slots), max(used, self.capacity))
        for mine, theirs in zip(self.k + self.v, other.k + other.v):
            mine[n : n + k, :, :used] = theirs[:k, :, :used].to(self.device)
        self.batch = n + k
        self._set_lens(self._lens + other._lens)

    def remove_rows(self, rows: Sequence[int]) -> list[int]:
        """Drop the given rows; rows from the end move into the holes (one row copy each).

        Returns, for each remaining row in its new place, its old index.
        """
        gone = set(rows)
        if any(not 0 <= r < self.batch for r in gone):
            raise ValueError(f"remove_rows: rows {sorted(gone)} must be within 0..{self.batch - 1}")
        keep = self.batch - len(gone)
        order = list(range(keep))
        movers = [r for r in range(keep, self.batch) if r not in gone]
        holes = [r for r in range(keep) if r in gone]
        for hole, src in zip(holes, movers):
            used = self._lens[src]
            for buf in self.k + self.v:
                buf[hole, :, :used] = buf[src, :, :used]
            order[hole] = src
        self.batch = keep
        self._set_lens([self._lens[o] for o in order])
        return order

    # ----------------------------------------------------------------- per-layer I/O
    def write(self, layer: int, k_new: torch.Tensor, v_new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Place the new K/V ([B, H, T, D]) after each row's cached tokens; return the visible buffer.

        The returned views span slots 0..max(lens)+T-1; the caller's mask hides what a row must
        not see. ``lens`` is not changed here.
        """
        t = k_new.shape[2]
        end = max(self._lens) + t
        if end > self.capacity:
            raise ValueError(
                f"forward of {t} tokens on cached length {max(self._lens)} needs {end} slots; "
                f"cache capacity is {self.capacity} (call ensure_capacity first)"
            )
        kb, vb = self.k[layer][: self.batch], self.v[layer][: self.batch]
        k_new, v_new = k_new.to(self.dtype), v_new.to(self.dtype)
        if torch.is_grad_enabled() and (k_new.requires_grad or v_new.requires_grad) and self.uniform:
            # Gradients through the new K/V (e.g. a drafter trained over its verifier's cache): store
            # detached copies, but hand attention a concatenation, so autograd never sees an in-place
            # write into a buffer that later forwards overwrite.
            start = self._lens[0]
            kb[:, :, start : start + t] = k_new.detach()
            vb[:, :, start : start + t] = v_new.detach()
            return torch.cat([kb[:, :, :start], k_new], dim=2), torch.cat([vb[:, :, :start], v_new], dim=2)
        if self.uniform:
            start = self._lens[0]
            kb[:, :, start : start + t] = k_new
            vb[:, :, start : start + t] = v_new
        else:
            idx = (self.lens[:, None] + torch.arange(t, device=self.device))[:, None, :, None]
            idx = idx.expand(self.batch, self.kv_heads, t, self.head_dim)
            kb.scatter_(2, idx, k_new)
            vb.scatter_(2, idx, v_new)
        return kb[:, :, :end], vb[:, :, :end]

    def keep(self, row_offsets: Sequence[Sequence[int]]) -> None:
        """Compact the last forward's new tokens: row b keeps new tokens ``row_offsets[b]`` (in order)
        as its next cached slots, and ``lens`` advances by how many were kept.

        Used when only some tokens of a forward are real continuations (e.g. the head tokens of the
        quadratic self-speculation grid).
        """
        counts = []
        for b, offsets in enumerate(row_offsets):
            start = self._lens[b]
            src = torch.tensor([start + o for o in offsets], dtype=torch.long, device=self.device)
            if len(offsets):
                for store in (self.k, self.v):
                    for buf in store:
                        buf[b, :, start : start + len(offsets)] = buf[b, :, src]
            counts.append(len(offsets))
        self.advance(counts)


def default_kv_dtype(param_dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """float32 K/V for reduced-precision models on CPU.

    CPUs without native bf16 run small bf16 attention matmuls several times slower than float32,
    and bf16 K/V are exact in float32, so the cache (and attention) are kept in float32 there.
    """
    if device.type == "cpu" and param_dtype in (torch.bfloat16, torch.float16):
        return torch.float32
    return param_dtype
