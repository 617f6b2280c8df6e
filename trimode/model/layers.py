"""Building blocks: RMSNorm and a linear layer that can carry switchable LoRA adapters.

Adapters are selected per forward call (``adapter=name`` or ``None``), never by module state, so a
decoder that drafts with the adapter on and verifies with it off cannot leave the model in the wrong
mode (a pitfall of the reference implementation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import kernels


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


class PackedWeight:
    """A copy of a float32 CPU weight laid out for one inference matmul kernel
    (:mod:`trimode.model.kernels`: ``trimode``'s panels or oneDNN's blocked layout).

    At batch 1 the stock CPU ``linear`` kernel streams an [out, in] weight far below the memory
    bandwidth, and the gap grows with the tokens of a block forward (on the 2-core EPYC dev box, the
    SmolLM2-135M projections: 50 ms with ``F.linear``, 29 ms with oneDNN, 17 ms with ``trimode`` at
    one token; 65, 41 and 22 ms at eight). The copy is used only while the source tensor is the same
    object at the same version (any in-place update, e.g. an optimizer step, invalidates it) and no
    gradient is wanted; it costs one extra copy of the weight in memory.
    """

    def __init__(self, weight: torch.Tensor, kernel: str = "auto") -> None:
        self.source = weight
        self.version = weight._version
        self.kernel = kernels.resolve(kernel)
        if self.kernel == "trimode":
            self.packed = kernels.pack(weight)
        elif self.kernel == "onednn":
            self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), 1)
        else:
            raise ValueError(f"kernel {kernel!r} packs no weight")

    @staticmethod
    def supported(weight: torch.Tensor) -> bool:
        return weight.device.type == "cpu" and weight.dtype == torch.float32 and torch.backends.mkldnn.is_available()

    def valid_for(self, weight: torch.Tensor, x: torch.Tensor) -> bool:
        return (
            weight is self.source and weight._version == self.version and x.dtype == torch.float32
            and not (torch.is_grad_enabled() and (weight.requires_grad or x.requires_grad))
        )

    def linear(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self.kernel == "trimode":
            return kernels.linear(x, self.packed, self.source.shape[0], bias)
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, bias, "none", [], "")


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, packed: PackedWeight | None) -> torch.Tensor:
    if packed is not None and packed.valid_for(weight, x):
        return packed.linear(x, bias)
    return F.linear(x, weight, bias)


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
        self.packed: PackedWeight | None = None

    def pack(self, kernel: str = "auto") -> bool:
        """Prepack the weight for CPU float32 inference with ``kernel`` (see :class:`PackedWeight`;
        ``plain`` drops the packed copy)."""
        use = kernel != "plain" and PackedWeight.supported(self.weight)
        self.packed = PackedWeight(self.weight, kernel) if use else None
        return self.packed is not None

    def add_lora(self, name: str, rank: int, scale: float, out_rows: tuple[int, int] | None = None) -> LoRA:
        rows = out_rows or (0, self.out_features)
        if not 0 <= rows[0] < rows[1] <= self.out_features:
            raise ValueError(f"LoRA rows {rows} outside 0..{self.out_features}")
        part = LoRA(self.in_features, rank, rows, scale).to(self.weight.device, self.weight.dtype)
        if name not in self.adapters:
            self.adapters[name] = nn.ModuleList()
        self.adapters[name].append(part)
        return part

    def forward(self, x: torch.Tensor, adapter: str | None = None, gate: torch.Tensor | None = None) -> torch.Tensor:
        """``gate`` [..., 1] (0/1, broadcast over features) limits the update to some tokens."""
        y = linear(x, self.weight, self.bias, self.packed)
        if adapter is not None and adapter in self.adapters:
            for part in self.adapters[adapter]:
                start, stop = part.out_rows
                delta = F.linear(F.linear(x, part.A), part.B) * part.scale
                if gate is not None:
                    delta = delta * gate
                if (start, stop) == (0, self.out_features):
                    y = y + delta
                else:
                    y = torch.cat([y[..., :start], y[..., start:stop] + delta, y[..., stop:]], dim=-1)
        return y
