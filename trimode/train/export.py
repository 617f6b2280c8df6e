"""``trimode export``: write a model in the released Nemotron-Labs-Diffusion Hugging Face layout.

The layout is a Ministral-3 decoder: ``config.json`` with ``model_type: nemotron_labs_diffusion``,
weights named ``encoder.*`` plus an untied ``diffusion_head.weight``, and the drafting adapter as a
PEFT folder ``linear_spec_lora/``. Engines that serve that family load it as they load the released
checkpoints. A tied head is written out as its own copy (same logits, one more vocab x hidden
matrix). Architectural features the layout has no field for are refused rather than dropped.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import NLD_MODEL_TYPE, ModelConfig
from ..model.convert import RECORDED_BLOCK
from ..model.loading import build_model, save_pretrained
from ..model.transformer import Transformer
from ..model.weights import internal_to_hf


class ExportError(ValueError):
    """The model uses something the target layout cannot express."""


def unexpressible(cfg: ModelConfig) -> list[str]:
    """Why ``cfg`` cannot be written in the NLD layout (empty when it can)."""
    problems = []
    if cfg.qk_norm:
        problems.append("q/k RMSNorm (Qwen3): Ministral-3 layers have no q_norm/k_norm weights")
    if cfg.attention_bias:
        problems.append("q/k/v biases (Qwen2): Ministral-3 projections have no bias")
    if cfg.sliding_window is not None and cfg.sliding_window < cfg.max_position_embeddings:
        problems.append(f"sliding-window attention ({cfg.sliding_window}): the NLD attention is full causal/bidirectional")
    if cfg.mask_token_id is None:
        problems.append("no mask_token_id: a tri-mode checkpoint needs one (pass --mask-token)")
    return problems


def to_nld(model: Transformer) -> Transformer:
    """The same function as ``model`` with an NLD config and an untied head (adapters carried over)."""
    cfg = model.config
    problems = unexpressible(cfg)
    if problems:
        raise ExportError(f"cannot export model_type={cfg.model_type!r} to {NLD_MODEL_TYPE}: " + "; ".join(problems))
    param = next(model.parameters())
    state = {k: v.detach() for k, v in model.state_dict().items()}
    hf = internal_to_hf(state, cfg.replace(model_type="llama"))
    if cfg.tie_word_embeddings:
        hf["lm_head.weight"] = hf["model.embed_tokens.weight"].clone()
    nld_cfg = cfg.replace(model_type=NLD_MODEL_TYPE, tie_word_embeddings=False, block_size=cfg.block_size or RECORDED_BLOCK)
    out = build_model(nld_cfg, hf, dtype=param.dtype, device=param.device, source="export")
    adapters = {k: v for k, v in state.items() if ".adapters." in k}
    for name, tensor in adapters.items():
        module_path, _, rest = name.partition(".adapters.")
        adapter, index, which = rest.split(".")
        src = model.get_submodule(f"{module_path}.adapters.{adapter}.{index}")
        dst = out.get_submodule(module_path)
        if adapter not in dst.adapters or len(dst.adapters[adapter]) <= int(index):
            dst.add_lora(adapter, src.A.shape[0], src.scale, src.out_rows)
        with torch.no_grad():
            getattr(dst.adapters[adapter][int(index)], which).copy_(tensor)
    return out


def export_nld(model: Transformer, folder: str | Path, tokenizer=None) -> Path:
    return save_pretrained(to_nld(model), folder, tokenizer=tokenizer)
