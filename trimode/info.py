"""``trimode info``: what a checkpoint is (format, size, adapters, EOS ids, chat template, config)."""

from __future__ import annotations

import argparse
import json

from .cli_common import add_model_args, load_from_args


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_args(p)


def run(args: argparse.Namespace) -> int:
    loaded = load_from_args(args)
    cfg = loaded.config
    info = {
        "source": str(loaded.source),
        "format": loaded.format,
        "parameters": sum(p.numel() for p in loaded.model.parameters()),
        "adapters": loaded.model.adapter_names,
        "eos_token_ids": list(loaded.eos_token_ids),
        "chat_template": bool(loaded.tokenizer and loaded.tokenizer.chat_template),
        "config": cfg.to_hf(),
    }
    print(json.dumps(info, indent=2))
    return 0
