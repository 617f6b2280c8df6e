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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ..config import ModelConfig
from ..files import (
    CheckpointError,
    inside,
    load_safetensors,
    meta_tensors,
    read_header,
    read_json,
    require_finite,
)
from ..tokenizer import Tokenizer
from . import kernels
from .adapters import (
    DRAFT_ADAPTER,
    adapter_folder,
    has_adapter,
    load_peft_adapter,
    save_peft_adapter,
)
from .convert import mask_changes, resolve_token
from .delta import apply_delta, delta_changes, is_delta, read_meta, resolve_base
from .gguf import load_gguf
from .transformer import Transformer
from .weights import hf_to_internal, internal_to_hf

_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# Automatic weight packing doubles the memory of the projections, so it is only done by default for
# models up to this size (float32 bytes); pass pack=True to force it.
AUTO_PACK_MAX_BYTES = 4 * 2**30


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


@dataclass(frozen=True)
class ConfigChange:
    """A change to a checkpoint's config made before its model is built: a mask token (an id, or a
    token text looked up in the checkpoint's tokenizer; it brings a block size of 32 when the config
    has none) and then plain field values."""

    mask_token: int | str | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)
    default_mask_token: str | None = None  # used when there is still no mask token and the tokenizer has it

    def apply(self, cfg: ModelConfig, tokenizer: Tokenizer | None) -> ModelConfig:
        token = self.mask_token
        if token is None and cfg.mask_token_id is None and self.default_mask_token is not None:
            known = tokenizer is not None and tokenizer.backend.token_to_id(self.default_mask_token) is not None
            token = self.default_mask_token if known else None
        if token is not None:
            cfg = cfg.replace(**mask_changes(cfg, resolve_token(tokenizer, str(token))))
        return cfg.replace(**self.fields) if self.fields else cfg


@dataclass(frozen=True)
class _Options:
    dtype: torch.dtype
    device: str | torch.device
    adapter: bool
    changes: tuple[ConfigChange, ...] = ()

    def configured(self, cfg: ModelConfig, tokenizer: Tokenizer | None) -> ModelConfig:
        for change in self.changes:
            cfg = change.apply(cfg, tokenizer)
        return cfg


def load(
    path: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    adapter: bool = True,
    pack: bool | None = None,
    kernel: str = "auto",
    mask_token: int | str | None = None,
    config: Mapping[str, Any] | None = None,
    default_mask_token: str | None = None,
) -> LoadedModel:
    """Load a checkpoint folder or a ``.gguf`` file.

    ``mask_token``: for a checkpoint without one (a plain AR model), the token that diffusion and
    self-speculation read as a mask, as an id or a token text. ``config``: further config fields to
    set (e.g. ``block_size``). Both are applied before the model is built, so the model's config is
    never replaced afterwards. ``default_mask_token``: the mask token of a checkpoint that has none
    when ``mask_token`` is not given and the tokenizer has that token. ``pack``: prepack weights for CPU float32 inference
    (:meth:`Transformer.pack_weights`, faster batch-1 decoding for one extra copy of the weights);
    None = automatically on CPU in float32 for models up to :data:`AUTO_PACK_MAX_BYTES`. ``kernel``:
    the matmul kernel packed for (:data:`trimode.model.kernels.KERNELS`).
    """
    kernels.resolve(kernel)  # a bad name fails before the load, not after it
    change = ConfigChange(mask_token, dict(config or {}), default_mask_token)
    loaded = _load_any(Path(path), _Options(dtype, device, adapter, (change,)))
    model = loaded.model
    if pack is None:
        weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        pack = weight_bytes <= AUTO_PACK_MAX_BYTES
    if pack:
        model.pack_weights(kernel)
    return loaded


def _load_any(path: Path, opts: _Options) -> LoadedModel:
    if not path.exists():
        raise FileNotFoundError(f"model path {path} does not exist (expected a checkpoint folder or a .gguf file)")
    if path.is_file():
        if path.suffix == ".gguf":
            return _load_gguf(path, opts)
        if path.suffix in _PICKLE_SUFFIXES:
            raise CheckpointError(f"{path} is a pickle checkpoint; trimode only loads safetensors (unpickling can run code)")
        raise CheckpointError(f"{path}: expected a checkpoint folder or a .gguf file")
    if is_delta(path):
        return _load_delta(path, opts)
    return _load_folder(path, opts)


def _load_delta(folder: Path, opts: _Options) -> LoadedModel:
    meta = read_meta(folder)
    base = resolve_base(folder, meta)
    if is_delta(base):
        raise CheckpointError(f"delta {folder} names another delta ({base}) as its base; chains are not supported")
    # A delta's own adapter replaces the base's (adapter training continues the base's adapter).
    own_adapter = opts.adapter and has_adapter(folder)
    mask_id, fields = delta_changes(meta, own_adapter)
    inner = _Options(opts.dtype, opts.device, opts.adapter and not own_adapter,
                     (ConfigChange(mask_id, fields), *opts.changes))
    loaded = _load_any(base, inner)
    apply_delta(loaded.model, folder, own_adapter)
    loaded.source, loaded.format = folder, "delta"
    loaded.extras["base"] = base
    return loaded


def _load_folder(folder: Path, opts: _Options) -> LoadedModel:
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"no config.json in {folder}")
    cfg = config_from_hf(read_json(cfg_path), cfg_path)
    gen_eos = _generation_eos(folder)
    if gen_eos:
        cfg = cfg.replace(eos_token_ids=tuple(dict.fromkeys(cfg.eos_token_ids + gen_eos)))
    tokenizer = None
    if (folder / "tokenizer.json").is_file():
        tokenizer = Tokenizer.from_folder(folder, eos_token_ids=cfg.eos_token_ids)
    cfg = opts.configured(cfg, tokenizer)
    headers = _weight_headers(folder)
    # The config's shapes are checked against the files' headers before any weight is read or any
    # memory is taken: the model is laid out on the meta device, so a config asking for absurd
    # sizes fails on the mismatch, and what a load allocates is bounded by what the files hold.
    _plan(cfg, meta_tensors({name: entry for h in headers.values() for name, entry in h.items()}), folder)
    state = {name: t for f in headers for name, t in load_safetensors(f).items()}
    model = build_model(cfg, state, dtype=opts.dtype, device=opts.device, source=folder)
    fmt = "nld" if cfg.model_type == "nemotron_labs_diffusion" else "hf"
    if opts.adapter and has_adapter(folder):
        load_peft_adapter(model, adapter_folder(folder), DRAFT_ADAPTER)
    eos = tokenizer.eos_token_ids if tokenizer else cfg.eos_token_ids
    return LoadedModel(model, tokenizer, folder, fmt, tuple(dict.fromkeys(cfg.eos_token_ids + tuple(eos))))


def _load_gguf(path: Path, opts: _Options) -> LoadedModel:
    ckpt = load_gguf(path, dtype=opts.dtype)
    cfg = config_from_hf(ckpt.hf_config, path)
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
    cfg = opts.configured(cfg, tokenizer)
    model = build_model(cfg, ckpt.state_dict, dtype=opts.dtype, device=opts.device, source=path)
    eos = tuple(dict.fromkeys(cfg.eos_token_ids + tokenizer.eos_token_ids))
    return LoadedModel(model, tokenizer, path, "gguf", eos)


def config_from_hf(hf: dict[str, Any], source: Path) -> ModelConfig:
    """:meth:`ModelConfig.from_hf` of a checkpoint's config, any fault in it named with ``source``."""
    try:
        return ModelConfig.from_hf(hf)
    except KeyError as err:
        raise CheckpointError(f"{source}: lacks the field {err.args[0]!r}") from None
    except (TypeError, ValueError, ArithmeticError) as err:  # from_hf reads values of any JSON type
        raise CheckpointError(f"{source}: {err}") from None


def _generation_eos(folder: Path) -> tuple[int, ...]:
    path = folder / "generation_config.json"
    if not path.is_file():
        return ()
    eos = read_json(path).get("eos_token_id")
    if eos is None:
        return ()
    eos = eos if isinstance(eos, list) else [eos]
    if not all(isinstance(e, int) and not isinstance(e, bool) and e >= 0 for e in eos):
        raise CheckpointError(f"{path}: eos_token_id must be a token id or a list of them, got {eos!r}")
    return tuple(eos)


def read_safetensors_folder(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of ``model.safetensors`` or of the shards listed in ``model.safetensors.index.json``."""
    return {name: t for f in _weight_headers(folder) for name, t in load_safetensors(f).items()}


def _weight_headers(folder: Path) -> dict[Path, dict[str, tuple[str, tuple[int, ...]]]]:
    """The safetensors files of a checkpoint folder and their checked headers (a sharded
    checkpoint's against its index)."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index} has no 'weight_map' object")
        shards = {}
        for path in sorted({inside(folder, shard, index) for shard in weight_map.values()}):
            if not path.is_file():
                raise FileNotFoundError(f"shard {path.relative_to(folder)} listed in {index} is missing")
            shards[path] = read_header(path)
        missing = set(weight_map) - {name for header in shards.values() for name in header}
        if missing:
            raise CheckpointError(f"{index} lists tensors not found in the shards: {sorted(missing)[:5]}")
        return shards
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
    return {f: read_header(f) for f in files}


def build_model(
    cfg: ModelConfig,
    hf_state: dict[str, torch.Tensor],
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    source: Path | str = "<state dict>",
) -> Transformer:
    """Instantiate on the meta device and assign the checkpoint tensors (no double allocation)."""
    model, internal = _plan(cfg, hf_state, source)
    # Copy into fresh torch allocations: tensors that come from numpy or a memory map can sit at
    # 16-byte offsets, and misaligned weights make the CPU matmul kernels markedly slower.
    weights = {}
    for name, tensor in internal.items():
        weights[name] = tensor.to(device=device, dtype=dtype, copy=True, memory_format=torch.contiguous_format)
        # Readers refuse NaN/Inf in the files, but float16 (max 65504) can overflow to Inf when a
        # reader or this copy converts; bfloat16 keeps float32's exponent range.
        if dtype == torch.float16:
            require_finite(weights[name], f"{source}: tensor {_shown(name)} as {dtype}")
    model.load_state_dict(weights, assign=True)
    # Buffers (rotary inverse frequencies) are derived, not loaded: rebuild them for real.
    model.rotary = type(model.rotary)(cfg.rope, cfg.head_dim).to(device)
    return model.eval()


def _shown(name: str) -> str:
    return name.replace("qkv_proj", "{q,k,v}_proj (fused)").replace("gate_up_proj", "{gate,up}_proj (fused)")


def _plan(cfg: ModelConfig, hf_state: Mapping[str, torch.Tensor], source: Path | str):
    """The model on the meta device and the checkpoint's tensors under its names, refused unless
    they are floating point and have exactly the names and shapes the config implies."""
    for name, tensor in hf_state.items():
        if not tensor.is_floating_point():
            raise CheckpointError(f"{source}: tensor {name} has dtype {tensor.dtype}; expected floating-point weights")
    try:
        internal = hf_to_internal(hf_state, cfg)
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"{source}: {err.args[0]}") from None
    with torch.device("meta"):
        model = Transformer(cfg)
    expected = model.state_dict()
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
            raise CheckpointError(
                f"{source}: shape mismatch for {_shown(name)}: checkpoint has {tuple(tensor.shape)}, "
                f"config.json implies {tuple(expected[name].shape)}"
            )
    return model, internal


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
        save_peft_adapter(model, adapter_folder(folder, name), name)
    if tokenizer is not None:
        tokenizer.save(folder)
    elif tokenizer_folder is not None:
        for fname in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json"):
            src = Path(tokenizer_folder) / fname
            if src.is_file():
                (folder / fname).write_bytes(src.read_bytes())
    return folder
