"""Weight-name mapping between checkpoints (HF per-projection names, NLD ``encoder.*`` names,
PEFT LoRA names) and our fused modules.

Checkpoints always use Hugging Face names, so a model saved here loads in transformers and back.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from ..config import NLD_MODEL_TYPE, ModelConfig

_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_QKV = ("q_proj", "k_proj", "v_proj")
_GATE_UP = ("gate_proj", "up_proj")


def from_nld_names(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``encoder.*`` -> ``model.*``, ``diffusion_head.weight`` -> ``lm_head.weight``."""
    out = {}
    for name, tensor in state.items():
        if name.startswith("encoder."):
            name = "model." + name[len("encoder.") :]
        elif name == "diffusion_head.weight":
            name = "lm_head.weight"
        out[name] = tensor
    return out


def to_nld_names(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for name, tensor in state.items():
        if name.startswith("model."):
            name = "encoder." + name[len("model.") :]
        elif name == "lm_head.weight":
            name = "diffusion_head.weight"
        out[name] = tensor
    return out


def projection_rows(cfg: ModelConfig) -> dict[str, tuple[str, tuple[int, int]]]:
    """HF projection -> (our fused module, its row range in the fused output)."""
    q, kv, inter = cfg.q_size, cfg.kv_size, cfg.intermediate_size
    return {
        "self_attn.q_proj": ("self_attn.qkv_proj", (0, q)),
        "self_attn.k_proj": ("self_attn.qkv_proj", (q, q + kv)),
        "self_attn.v_proj": ("self_attn.qkv_proj", (q + kv, q + 2 * kv)),
        "self_attn.o_proj": ("self_attn.o_proj", (0, cfg.hidden_size)),
        "mlp.gate_proj": ("mlp.gate_up_proj", (0, inter)),
        "mlp.up_proj": ("mlp.gate_up_proj", (inter, 2 * inter)),
        "mlp.down_proj": ("mlp.down_proj", (0, cfg.hidden_size)),
    }


def hf_to_internal(state: Mapping[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """HF (or NLD) names -> our module names, fusing q/k/v and gate/up. Unknown keys raise."""
    if any(k.startswith("encoder.") or k == "diffusion_head.weight" for k in state):
        state = from_nld_names(state)
    out: dict[str, torch.Tensor] = {}
    pending: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in state.items():
        if "rotary_emb" in name:
            continue  # derived from the config, never loaded
        m = _LAYER.match(name)
        if m is None:
            if name in ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"):
                out[name] = tensor
                continue
            raise KeyError(f"unexpected weight {name!r} in checkpoint (model_type {cfg.model_type})")
        layer, rest = m.group(1), m.group(2)
        module, _, kind = rest.rpartition(".")
        proj = module.split(".")[-1]
        if proj in _QKV or proj in _GATE_UP:
            fused = "self_attn.qkv_proj" if proj in _QKV else "mlp.gate_up_proj"
            pending.setdefault(f"model.layers.{layer}.{fused}.{kind}", {})[proj] = tensor
        else:
            out[name] = tensor
    for fused_name, parts in pending.items():
        order = _QKV if ".qkv_proj." in fused_name else _GATE_UP
        missing = [p for p in order if p not in parts]
        if missing:
            raise KeyError(f"checkpoint lacks {missing} for {fused_name}")
        shapes = [tuple(parts[p].shape) for p in order]
        if len({s[1:] for s in shapes}) != 1 or not all(shapes):
            raise ValueError(f"{fused_name} cannot be fused from {dict(zip(order, shapes))}: "
                             "expected tensors that differ only in their first dimension")
        out[fused_name] = torch.cat([parts[p] for p in order], dim=0)
    if cfg.tie_word_embeddings:
        out.pop("lm_head.weight", None)
    return out


def internal_to_hf(state: Mapping[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Our names -> HF names (split fused projections); adapters are left out (saved by PEFT layout)."""
    out: dict[str, torch.Tensor] = {}
    rows = projection_rows(cfg)
    for name, tensor in state.items():
        if ".adapters." in name:
            continue
        m = _LAYER.match(name)
        if m and (".qkv_proj." in name or ".gate_up_proj." in name):
            layer, rest = m.group(1), m.group(2)
            fused, _, kind = rest.rpartition(".")
            for hf_proj, (ours, (start, stop)) in rows.items():
                if ours == fused:
                    out[f"model.layers.{layer}.{hf_proj}.{kind}"] = tensor[start:stop].contiguous()
        else:
            out[name] = tensor.contiguous()
    if cfg.model_type == NLD_MODEL_TYPE:
        out = to_nld_names(out)
    return out


_PEFT = re.compile(r"^base_model\.model\.(?:encoder|model)\.layers\.(\d+)\.(.+)\.lora_([AB])(?:\.[^.]+)?\.weight$")


def peft_lora_targets(
    adapter_state: Mapping[str, torch.Tensor], cfg: ModelConfig
) -> dict[tuple[int, str], dict[str, torch.Tensor]]:
    """PEFT LoRA tensors grouped by (layer, HF projection): {"A": [r, in], "B": [out, r]}."""
    rows = projection_rows(cfg)
    groups: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for name, tensor in adapter_state.items():
        m = _PEFT.match(name)
        if m is None or m.group(2) not in rows:
            raise KeyError(
                f"unsupported adapter tensor {name!r}: expected PEFT LoRA on "
                f"{sorted(rows)} of base_model.model.(encoder|model).layers.N"
            )
        groups.setdefault((int(m.group(1)), m.group(2)), {})[m.group(3)] = tensor
    for key, parts in groups.items():
        if set(parts) != {"A", "B"}:
            raise KeyError(f"adapter for layer {key[0]} {key[1]} has {sorted(parts)}, expected lora_A and lora_B")
    return groups
