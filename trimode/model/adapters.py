"""The drafting adapter's name and folder, and LoRA adapters in the PEFT layout on disk.

A PEFT folder is ``adapter_config.json`` (rank, alpha, target modules, optionally the layers it
covers) plus ``adapter_model.safetensors`` with ``base_model.model.<prefix>.layers.<i>.<proj>.
lora_{A,B}.weight`` tensors. The drafting adapter lives in ``linear_spec_lora/`` of a checkpoint
(the layout of the published Nemotron-Labs-Diffusion models) and is attached under the name
:data:`DRAFT_ADAPTER`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..files import CheckpointError, load_safetensors, read_json
from .transformer import Transformer
from .weights import peft_lora_targets, projection_rows

DRAFT_ADAPTER = "linear_spec"
ADAPTER_DIR = "linear_spec_lora"


def adapter_folder(checkpoint: Path, name: str = DRAFT_ADAPTER) -> Path:
    """Where a checkpoint keeps adapter ``name`` (the drafting adapter in ``linear_spec_lora/``)."""
    return checkpoint / (ADAPTER_DIR if name == DRAFT_ADAPTER else f"{name}_lora")


def has_adapter(checkpoint: Path, name: str = DRAFT_ADAPTER) -> bool:
    return (adapter_folder(checkpoint, name) / "adapter_config.json").is_file()


def load_peft_adapter(model: Transformer, folder: Path, name: str = DRAFT_ADAPTER) -> None:
    """Attach a PEFT LoRA adapter (``adapter_config.json`` + ``adapter_model.safetensors``)."""
    cfg_path, weights = folder / "adapter_config.json", folder / "adapter_model.safetensors"
    if not weights.is_file():
        if (folder / "adapter_model.bin").is_file():
            raise CheckpointError(f"{folder}/adapter_model.bin is a pickle; only adapter_model.safetensors is loaded")
        raise FileNotFoundError(f"no adapter_model.safetensors in {folder}")
    acfg = read_json(cfg_path)
    if acfg.get("peft_type", "LORA") != "LORA":
        raise CheckpointError(f"{cfg_path}: peft_type {acfg.get('peft_type')!r} is not supported (LORA only)")
    if acfg.get("use_dora"):
        raise CheckpointError(f"{cfg_path}: DoRA adapters are not supported")
    rank, alpha = acfg.get("r"), acfg.get("lora_alpha")
    if not (isinstance(rank, int) and not isinstance(rank, bool) and rank > 0):
        raise CheckpointError(f"{cfg_path}: r must be a positive integer (the LoRA rank), got {rank!r}")
    if not (isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and math.isfinite(alpha)):
        raise CheckpointError(f"{cfg_path}: lora_alpha must be a finite number, got {alpha!r}")
    scale = alpha / rank**0.5 if acfg.get("use_rslora") else alpha / rank
    try:
        groups = peft_lora_targets(load_safetensors(weights), model.config)
    except KeyError as err:
        raise CheckpointError(f"{weights}: {err.args[0]}") from None
    rows = projection_rows(model.config)
    param = next(model.parameters())
    for (layer, proj), parts in sorted(groups.items()):
        if layer >= model.config.num_hidden_layers:
            raise CheckpointError(f"{weights}: adapter targets layer {layer}, model has {model.config.num_hidden_layers}")
        fused, out_rows = rows[proj]
        module = model.model.layers[layer].get_submodule(fused)
        a, b = parts["A"], parts["B"]
        if (a.dim() != 2 or b.dim() != 2 or a.shape[1] != module.in_features
                or b.shape[0] != out_rows[1] - out_rows[0] or a.shape[0] != b.shape[1]):
            raise CheckpointError(
                f"{weights}: LoRA for layer {layer} {proj} has A{tuple(a.shape)} B{tuple(b.shape)}, "
                f"expected A[r, {module.in_features}] B[{out_rows[1] - out_rows[0]}, r]"
            )
        lora = module.add_lora(name, a.shape[0], scale, out_rows)
        with torch.no_grad():
            lora.A.copy_(a.to(param.dtype))
            lora.B.copy_(b.to(param.dtype))


def save_peft_adapter(model: Transformer, folder: Path, name: str) -> None:
    prefix = "encoder" if model.config.model_type == "nemotron_labs_diffusion" else "model"
    rows = projection_rows(model.config)
    tensors: dict[str, torch.Tensor] = {}
    targets, ranks, scales, layers = set(), set(), set(), set()
    for layer_idx, layer in enumerate(model.model.layers):
        for proj, (fused, out_rows) in rows.items():
            module = layer.get_submodule(fused)
            for part in module.adapters[name] if name in module.adapters else []:
                if part.out_rows != out_rows:
                    continue
                key = f"base_model.model.{prefix}.layers.{layer_idx}.{proj}"
                tensors[f"{key}.lora_A.weight"] = part.A.detach().cpu().contiguous()
                tensors[f"{key}.lora_B.weight"] = part.B.detach().cpu().contiguous()
                targets.add(proj.split(".")[-1])
                layers.add(layer_idx)
                ranks.add(part.A.shape[0])
                scales.add(part.scale)
    if len(ranks) != 1 or len(scales) != 1:
        raise ValueError(f"adapter {name!r} mixes ranks {ranks} / scales {scales}; PEFT layout needs one of each")
    rank, scale = ranks.pop(), scales.pop()
    folder.mkdir(parents=True, exist_ok=True)
    acfg = {"peft_type": "LORA", "r": rank, "lora_alpha": scale * rank, "target_modules": sorted(targets),
            "lora_dropout": 0.0, "bias": "none", "use_rslora": False, "use_dora": False, "fan_in_fan_out": False,
            "inference_mode": True}
    if len(layers) < model.config.num_hidden_layers:  # PEFT's name for an adapter on some layers only
        acfg["layers_to_transform"] = sorted(layers)
    (folder / "adapter_config.json").write_text(json.dumps(acfg, indent=2))
    save_file(tensors, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
