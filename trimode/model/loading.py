"""Checkpoint loading and saving.

Accepted inputs (no remote code is ever executed, no pickle is ever read):
1. Nemotron-Labs-Diffusion folders: ``config.json`` (model_type ``nemotron_labs_diffusion``),
   (sharded) safetensors with ``encoder.*`` / ``diffusion_head.weight``, optional
   ``linear_spec_lora/`` PEFT adapter (loaded under the name :data:`DRAFT_ADAPTER`).
2. Hugging Face Llama / Mistral / Ministral-3 / Qwen2 / Qwen3 folders with safetensors.
3. GGUF files (dequantized), with their tokenizer and chat template.
4. Tri-mode deltas (:mod:`trimode.model.delta`): an adapter and embedding rows over a base above.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..config import ModelConfig
from ..tokenizer import Tokenizer
from .delta import apply_delta, is_delta, read_meta, resolve_base
from .transformer import Transformer
from .weights import hf_to_internal, internal_to_hf, peft_lora_targets, projection_rows

DRAFT_ADAPTER = "linear_spec"
ADAPTER_DIR = "linear_spec_lora"
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# Automatic weight packing doubles the memory of the projections, so it is only done by default for
# models up to this size (float32 bytes); pass pack=True to force it.
AUTO_PACK_MAX_BYTES = 4 * 2**30


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message names the file and what was expected."""


@dataclass
class LoadedModel:
    model: Transformer
    tokenizer: Tokenizer | None
    source: Path
    format: str  # "nld" | "hf" | "gguf" | "delta" (see trimode.model.delta)
    eos_token_ids: tuple[int, ...] = ()
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> ModelConfig:
        return self.model.config


def load(
    path: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    adapter: bool = True,
    pack: bool | None = None,
) -> LoadedModel:
    """Load a checkpoint folder or a ``.gguf`` file.

    ``pack``: prepack weights for CPU float32 inference (:meth:`Transformer.pack_weights`, faster
    batch-1 decoding for one extra copy of the weights); None = automatically on CPU in float32
    for models up to :data:`AUTO_PACK_MAX_BYTES`.
    """
    loaded = _load_any(Path(path), dtype, device, adapter)
    model = loaded.model
    if pack is None:
        weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        pack = weight_bytes <= AUTO_PACK_MAX_BYTES
    if pack:
        model.pack_weights()
    return loaded


def _load_any(path: Path, dtype: torch.dtype, device: str | torch.device, adapter: bool) -> LoadedModel:
    if not path.exists():
        raise FileNotFoundError(f"model path {path} does not exist (expected a checkpoint folder or a .gguf file)")
    if path.is_file():
        if path.suffix == ".gguf":
            return _load_gguf(path, dtype, device)
        if path.suffix in _PICKLE_SUFFIXES:
            raise CheckpointError(f"{path} is a pickle checkpoint; trimode only loads safetensors (unpickling can run code)")
        raise CheckpointError(f"{path}: expected a checkpoint folder or a .gguf file")
    if is_delta(path):
        return _load_delta(path, dtype, device, adapter)
    return _load_folder(path, dtype, device, adapter)


def _load_delta(folder: Path, dtype: torch.dtype, device: str | torch.device, adapter: bool) -> LoadedModel:
    meta = read_meta(folder)
    base = resolve_base(folder, meta)
    if is_delta(base):
        raise CheckpointError(f"delta {folder} names another delta ({base}) as its base; chains are not supported")
    # A delta's own adapter replaces the base's (adapter training continues the base's adapter).
    own_adapter = (folder / ADAPTER_DIR / "adapter_config.json").is_file()
    loaded = _load_any(base, dtype, device, adapter and not own_adapter)
    apply_delta(loaded, folder, meta, adapter)
    loaded.source, loaded.format = folder, "delta"
    loaded.extras["base"] = base
    return loaded


def _load_folder(folder: Path, dtype: torch.dtype, device: str | torch.device, adapter: bool) -> LoadedModel:
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"no config.json in {folder}")
    hf_cfg = json.loads(cfg_path.read_text())
    cfg = ModelConfig.from_hf(hf_cfg)
    gen_eos = _generation_eos(folder)
    if gen_eos:
        cfg = cfg.replace(eos_token_ids=tuple(dict.fromkeys(cfg.eos_token_ids + gen_eos)))
    state = read_safetensors_folder(folder)
    model = build_model(cfg, state, dtype=dtype, device=device, source=folder)
    fmt = "nld" if cfg.model_type == "nemotron_labs_diffusion" else "hf"
    if adapter and (folder / ADAPTER_DIR / "adapter_config.json").is_file():
        load_peft_adapter(model, folder / ADAPTER_DIR, DRAFT_ADAPTER)
    tokenizer = None
    if (folder / "tokenizer.json").is_file():
        tokenizer = Tokenizer.from_folder(folder, eos_token_ids=cfg.eos_token_ids)
    eos = tokenizer.eos_token_ids if tokenizer else cfg.eos_token_ids
    return LoadedModel(model, tokenizer, folder, fmt, tuple(dict.fromkeys(cfg.eos_token_ids + tuple(eos))))


def _load_gguf(path: Path, dtype: torch.dtype, device: str | torch.device) -> LoadedModel:
    from .gguf import load_gguf

    ckpt = load_gguf(path, dtype=dtype)
    cfg = ModelConfig.from_hf(ckpt.hf_config)
    model = build_model(cfg, ckpt.state_dict, dtype=dtype, device=device, source=path)
    specials = ckpt.special_tokens or {}
    eos_ids = tuple(x for x in (ckpt.eos_token_id,) if x is not None)
    tokenizer = Tokenizer(
        ckpt.tokenizer,
        bos_token=specials.get("bos_token"),
        eos_token=specials.get("eos_token"),
        eos_token_ids=eos_ids,
        chat_template=ckpt.chat_template,
        add_bos_token=ckpt.add_bos_token,
    )
    eos = tuple(dict.fromkeys(cfg.eos_token_ids + tokenizer.eos_token_ids))
    return LoadedModel(model, tokenizer, path, "gguf", eos)


def _generation_eos(folder: Path) -> tuple[int, ...]:
    path = folder / "generation_config.json"
    if not path.is_file():
        return ()
    eos = json.loads(path.read_text()).get("eos_token_id")
    if eos is None:
        return ()
    return tuple(eos) if isinstance(eos, list) else (eos,)


def read_safetensors_folder(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of ``model.safetensors`` or of the shards listed in ``model.safetensors.index.json``."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index} has no 'weight_map' object")
        state: dict[str, torch.Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            shard_path = folder / shard
            if not shard_path.is_file():
                raise FileNotFoundError(f"shard {shard} listed in {index} is missing")
            state.update(load_file(str(shard_path)))
        missing = set(weight_map) - set(state)
        if missing:
            raise CheckpointError(f"{index} lists tensors not found in the shards: {sorted(missing)[:5]}")
        return state
    single = folder / "model.safetensors"
    files = [single] if single.is_file() else sorted(folder.glob("model-*-of-*.safetensors"))
    if not files:
        pickles = [p.name for p in folder.iterdir() if p.suffix in _PICKLE_SUFFIXES]
        if pickles:
            raise CheckpointError(
                f"{folder} only has pickle weights {pickles}; trimode loads safetensors only "
                "(convert them with a trusted tool first)"
            )
        others = sorted(p.name for p in folder.glob("*.safetensors"))
        raise FileNotFoundError(
            f"no model.safetensors (or model.safetensors.index.json shards) in {folder}"
            + (f"; found only {others}" if others else "")
        )
    state = {}
    for f in files:
        state.update(load_file(str(f)))
    return state


def build_model(
    cfg: ModelConfig,
    hf_state: dict[str, torch.Tensor],
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    source: Path | str = "<state dict>",
) -> Transformer:
    """Instantiate on the meta device and assign the checkpoint tensors (no double allocation)."""
    try:
        internal = hf_to_internal(hf_state, cfg)
    except KeyError as err:
        raise CheckpointError(f"{source}: {err.args[0]}") from None
    with torch.device("meta"):
        model = Transformer(cfg)
    expected = {k: v for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(internal))
    unexpected = sorted(set(internal) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: weights do not match model_type {cfg.model_type!r}: "
            f"missing {missing[:6]}{'...' if len(missing) > 6 else ''}, "
            f"unexpected {unexpected[:6]}{'...' if len(unexpected) > 6 else ''}"
        )
    for name, tensor in internal.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            shown = name.replace("qkv_proj", "{q,k,v}_proj (fused)").replace("gate_up_proj", "{gate,up}_proj (fused)")
            raise CheckpointError(
                f"{source}: shape mismatch for {shown}: checkpoint has {tuple(tensor.shape)}, "
                f"config.json implies {tuple(expected[name].shape)}"
            )
    # Copy into fresh torch allocations: tensors that come from numpy or a memory map can sit at
    # 16-byte offsets, and misaligned weights make the CPU matmul kernels markedly slower.
    model.load_state_dict(
        {k: v.to(device=device, dtype=dtype, copy=True, memory_format=torch.contiguous_format) for k, v in internal.items()},
        assign=True,
    )
    # Buffers (rotary inverse frequencies) are derived, not loaded: rebuild them for real.
    model.rotary = type(model.rotary)(cfg.rope, cfg.head_dim).to(device)
    return model.eval()


def new_model(cfg: ModelConfig, *, seed: int = 0, dtype: torch.dtype = torch.float32, device: str = "cpu") -> Transformer:
    """A randomly initialised model (N(0, 0.02) linears, unit norms); for tests and training from scratch."""
    gen = torch.Generator().manual_seed(seed)
    model = Transformer(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith(".bias"):
                p.normal_(0.0, 0.02, generator=gen)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    return model.to(device=device, dtype=dtype).eval()


def load_peft_adapter(model: Transformer, folder: Path, name: str = DRAFT_ADAPTER) -> None:
    """Attach a PEFT LoRA adapter (``adapter_config.json`` + ``adapter_model.safetensors``)."""
    cfg_path, weights = folder / "adapter_config.json", folder / "adapter_model.safetensors"
    if not weights.is_file():
        if (folder / "adapter_model.bin").is_file():
            raise CheckpointError(f"{folder}/adapter_model.bin is a pickle; only adapter_model.safetensors is loaded")
        raise FileNotFoundError(f"no adapter_model.safetensors in {folder}")
    acfg = json.loads(cfg_path.read_text())
    if acfg.get("peft_type", "LORA") != "LORA":
        raise CheckpointError(f"{cfg_path}: peft_type {acfg.get('peft_type')!r} is not supported (LORA only)")
    if acfg.get("use_dora"):
        raise CheckpointError(f"{cfg_path}: DoRA adapters are not supported")
    rank, alpha = int(acfg["r"]), float(acfg["lora_alpha"])
    scale = alpha / rank**0.5 if acfg.get("use_rslora") else alpha / rank
    groups = peft_lora_targets(load_file(str(weights)), model.config)
    rows = projection_rows(model.config)
    param = next(model.parameters())
    for (layer, proj), parts in sorted(groups.items()):
        if layer >= model.config.num_hidden_layers:
            raise CheckpointError(f"{weights}: adapter targets layer {layer}, model has {model.config.num_hidden_layers}")
        fused, out_rows = rows[proj]
        module = model.model.layers[layer].get_submodule(fused)
        a, b = parts["A"], parts["B"]
        if a.shape[1] != module.in_features or b.shape[0] != out_rows[1] - out_rows[0] or a.shape[0] != b.shape[1]:
            raise CheckpointError(
                f"{weights}: LoRA for layer {layer} {proj} has A{tuple(a.shape)} B{tuple(b.shape)}, "
                f"expected A[r, {module.in_features}] B[{out_rows[1] - out_rows[0]}, r]"
            )
        lora = module.add_lora(name, a.shape[0], scale, out_rows)
        with torch.no_grad():
            lora.A.copy_(a.to(param.dtype))
            lora.B.copy_(b.to(param.dtype))


def save_pretrained(
    model: Transformer, folder: str | Path, tokenizer_folder: str | Path | None = None, tokenizer: Tokenizer | None = None
) -> Path:
    """Write ``config.json`` + ``model.safetensors`` with HF (or, for NLD configs, NLD) names,
    and every adapter as a PEFT folder (the draft adapter as ``linear_spec_lora/``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    (folder / "config.json").write_text(json.dumps(cfg.to_hf(), indent=2))
    state = internal_to_hf({k: v.detach().cpu() for k, v in model.state_dict().items()}, cfg)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    for name in model.adapter_names:
        _save_peft_adapter(model, folder / (ADAPTER_DIR if name == DRAFT_ADAPTER else f"{name}_lora"), name)
    if tokenizer is not None:
        tokenizer.save(folder)
    elif tokenizer_folder is not None:
        for fname in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json"):
            src = Path(tokenizer_folder) / fname
            if src.is_file():
                (folder / fname).write_bytes(src.read_bytes())
    return folder


def _save_peft_adapter(model: Transformer, folder: Path, name: str) -> None:
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
