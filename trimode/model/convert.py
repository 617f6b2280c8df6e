"""Turning a plain AR checkpoint into a (not yet trained) tri-mode one.

Diffusion and self-speculation need a mask token (an id the model reads as "unknown here"), and
linear self-speculation can use a drafting adapter. Before joint AR + diffusion training the
diffusion predictions are poor, but self-speculation is still exact at T=0 (drafts are only
proposals), which is what the losslessness checks on real models rely on.
"""

from __future__ import annotations

import math

import torch

from ..config import ModelConfig
from .adapters import DRAFT_ADAPTER
from .transformer import Transformer
from .weights import projection_rows


def resolve_token(tokenizer, token: str) -> int:
    """A token id given as digits or as the token's text (e.g. ``"<empty_output>"``)."""
    if token.isdigit():
        return int(token)
    tid = tokenizer.backend.token_to_id(token) if tokenizer is not None else None
    if tid is None:
        raise ValueError(f"{token!r} is not a token of this checkpoint (give a token text or an id)")
    return tid


# The block a tri-mode config records when none is known: the published models' training block.
# (What decoding runs at by default is the mode's block for the device, trimode.decoding.spec.)
RECORDED_BLOCK = 32


def mask_changes(cfg: ModelConfig, mask_token_id: int, block_size: int | None = None) -> dict:
    """The config fields that make ``mask_token_id`` the mask token: a block size comes with it
    (``block_size``, else the config's, else :data:`RECORDED_BLOCK`)."""
    if not 0 <= mask_token_id < cfg.vocab_size:
        raise ValueError(f"mask token id {mask_token_id} is outside the vocabulary [0, {cfg.vocab_size})")
    changes: dict = {"mask_token_id": mask_token_id}
    if block_size is not None or cfg.block_size is None:
        changes["block_size"] = block_size or RECORDED_BLOCK
    return changes


def set_mask_token(model: Transformer, mask_token_id: int, block_size: int | None = None) -> None:
    """Make an in-memory model (e.g. a fresh one in a test) tri-mode; checkpoints get their mask
    token when they are loaded (``trimode.model.load(path, mask_token=...)``)."""
    model.config = model.config.replace(**mask_changes(model.config, mask_token_id, block_size))


def add_drafting_adapter(
    model: Transformer,
    rank: int = 16,
    alpha: float = 32.0,
    targets: tuple[str, ...] = ("self_attn.o_proj",),
    init: str = "peft",
    seed: int = 0,
    layers: range | None = None,
    scope: str | None = None,
) -> None:
    """Attach an untrained LoRA drafting adapter (``DRAFT_ADAPTER``) to every layer (or to ``layers``);
    ``scope`` (one of ``ADAPTER_SCOPES``) records where it acts, in the config it is saved with.

    ``init="peft"``: A Kaiming-uniform, B zero (PEFT's default, a no-op until trained);
    ``init="random"``: B random too, so drafts with and without the adapter differ.
    """
    if DRAFT_ADAPTER in model.adapter_names:
        raise ValueError(f"the model already has a {DRAFT_ADAPTER!r} adapter")
    rows = projection_rows(model.config)
    unknown = [t for t in targets if t not in rows]
    if unknown:
        raise ValueError(f"unknown adapter targets {unknown}; expected some of {sorted(rows)}")
    gen = torch.Generator().manual_seed(seed)
    every = range(model.config.num_hidden_layers)
    layers = every if layers is None else layers
    if not layers or layers[0] < 0 or layers[-1] >= len(every):
        raise ValueError(f"adapter layers {layers} not within the model's {len(every)} layers")
    for layer in (model.model.layers[i] for i in layers):
        for target in targets:
            fused, out_rows = rows[target]
            module = layer.get_submodule(fused)
            lora = module.add_lora(DRAFT_ADAPTER, rank, alpha / rank, out_rows)
            bound = math.sqrt(6.0 / module.in_features) / math.sqrt(6.0)  # kaiming_uniform(a=sqrt(5))
            with torch.no_grad():
                lora.A.copy_((torch.rand(lora.A.shape, generator=gen) * 2 - 1) * bound)
                if init == "random":
                    lora.B.copy_(torch.randn(lora.B.shape, generator=gen) / math.sqrt(rank))
                elif init != "peft":
                    raise ValueError(f"init must be 'peft' or 'random', got {init!r}")
    if scope is not None:
        model.config = model.config.replace(adapter_scope=scope)
