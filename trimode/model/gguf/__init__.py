"""GGUF checkpoints (llama.cpp's file format): reader, dequantizers, config/weight conversion and
tokenizer. ``load_gguf`` turns a whole file into what the rest of trimode works with."""

from __future__ import annotations

from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer

from ...config import ModelConfig
from .convert import hf_config_from_gguf, state_dict_from_gguf
from .reader import GGUFError, GGUFFile, GGUFTensorInfo
from .tokenizer import build_tokenizer

__all__ = [
    "GGUFCheckpoint",
    "GGUFError",
    "GGUFFile",
    "GGUFTensorInfo",
    "build_tokenizer",
    "hf_config_from_gguf",
    "load_gguf",
    "state_dict_from_gguf",
]


@dataclass
class GGUFCheckpoint:
    """A GGUF model in Hugging Face terms."""

    path: Path
    hf_config: dict[str, Any]
    state_dict: dict[str, torch.Tensor] = field(repr=False)
    tokenizer: Tokenizer = field(repr=False)
    chat_template: str | None
    bos_token_id: int | None
    eos_token_id: int | None
    add_bos_token: bool
    add_eos_token: bool
    # bos_token / eos_token / unk_token / pad_token -> token text, for those the file names
    special_tokens: dict[str, str]


def load_gguf(
    path: str | PathLike[str], dtype: torch.dtype = torch.float32, progress: bool | None = None
) -> GGUFCheckpoint:
    """Config, dequantized weights and tokenizer of the GGUF model at ``path``.

    ``progress=None`` shows a progress bar while dequantizing only when stderr is a terminal.
    """
    gguf = GGUFFile(path)
    config = hf_config_from_gguf(gguf)
    try:  # sizes and types are checked before any tensor is dequantized
        ModelConfig.from_hf(config)
    except (TypeError, ValueError, ArithmeticError) as err:
        raise GGUFError(f"{gguf.path}: {err}") from None
    tokenizer = build_tokenizer(gguf)
    meta = gguf.metadata
    tokens = meta["tokenizer.ggml.tokens"]
    special_tokens = {}
    for name, key in (
        ("bos_token", "bos_token_id"),
        ("eos_token", "eos_token_id"),
        ("unk_token", "unknown_token_id"),
        ("pad_token", "padding_token_id"),
    ):
        token_id = meta.get(f"tokenizer.ggml.{key}")
        if token_id is not None:
            if not isinstance(token_id, int) or isinstance(token_id, bool) or not 0 <= token_id < len(tokens):
                raise GGUFError(f"{gguf.path}: tokenizer.ggml.{key} {token_id} is out of range")
            special_tokens[name] = tokens[token_id]
    # llama.cpp adds BOS by default for SentencePiece vocabularies that do not say otherwise.
    add_bos_default = meta["tokenizer.ggml.model"] == "llama"
    return GGUFCheckpoint(
        path=gguf.path,
        hf_config=config,
        state_dict=state_dict_from_gguf(gguf, config, dtype, progress),
        tokenizer=tokenizer,
        chat_template=meta.get("tokenizer.chat_template"),
        bos_token_id=config["bos_token_id"],
        eos_token_id=config["eos_token_id"],
        add_bos_token=bool(meta.get("tokenizer.ggml.add_bos_token", add_bos_default)),
        add_eos_token=bool(meta.get("tokenizer.ggml.add_eos_token", False)),
        special_tokens=special_tokens,
    )
