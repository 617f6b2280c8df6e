"""Building blocks: RMSNorm and a linear layer that can carry switchable LoRA adapters.

Adapters are selected per forward call (``adapter=name`` or ``None``), never by module state, so a
decoder that drafts with the adapter on and verifies with it off cannot leave the model in the wrong
mode (a pitfall of the reference implementation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
        # Reduced precision: normalise in float32, round, then scale in the model dtype (as HF does).
        return self.weight * F.rms_norm(x.float(), (x.shape[-1],), None, self.eps).to(x.dtype)


class LoRA(nn.Module):
    """One low-rank update y[..., rows] += scale * B(A(x)) on a slice of a (possibly fused) output."""

    def __init__(self, in_features: int, rank: int, out_rows: tuple[int, int], scale: float) -> None:
        super().__init__()
        start, stop = out_rows
        self.A = nn.Parameter(torch.zeros(rank, in_features))
        self.B = nn.Parameter(torch.zeros(stop - start, rank))
        self.out_rows = out_rows
        self.scale = scale


class Linear(nn.Module):
    """``y = x W^T (+ b)``, plus the LoRA updates of the adapter named in the call.

    A fused projection (q|k|v, gate|up) may hold several LoRA parts for one adapter name, one per
    original projection, each writing its own row range of the output.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.adapters = nn.ModuleDict()  # adapter name -> ModuleList[LoRA]

    def add_lora(self, name: str, rank: int, scale: float, out_rows: tuple[int, int] | None = None) -> LoRA:
        rows = out_rows or (0, self.out_features)
        if not 0 <= rows[0] < rows[1] <= self.out_features:
            raise ValueError(f"LoRA rows {rows} outside 0..{self.out_features}")
        part = LoRA(self.in_features, rank, rows, scale).to(self.weight.device, self.weight.dtype)
        if name not in self.adapters:
            self.adapters[name] = nn.ModuleList()
        self.adapters[name].append(part)
        return part

    def forward(self, x: torch.Tensor, adapter: str | None = None) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias)
        if adapter is not None and adapter in self.adapters:
            for part in self.adapters[adapter]:
                start, stop = part.out_rows
                delta = F.linear(F.linear(x, part.A), part.B) * part.scale
                if (start, stop) == (0, self.out_features):
                    y = y + delta
                else:
                    y = torch.cat([y[..., :start], y[..., start:stop] + delta, y[..., stop:]], dim=-1)
        return y
