"""``trimode serve``: load a checkpoint, start the engine, serve the OpenAI API with uvicorn."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli_common import add_model_args, load_from_args
from ..decoding.spec import ENGINE_MODES
from ..engine import Engine


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    p.add_argument("--mode", choices=ENGINE_MODES, default="auto", help="default mode (requests may override)")
    p.add_argument("--served-model-name", help="model id in the API (default: the checkpoint's file or folder name)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--block-size", type=int, default=None, help="default block size (default: each mode's block for the device)")
    p.add_argument("--max-batch", type=int, default=32, help="rows decoded together at most")
    p.add_argument("--max-cached-tokens", type=int, default=65536,
                   help="bound on reserved cache tokens (prompt + max_tokens + block per running request)")
    p.add_argument("--max-waiting", type=int, default=256, help="waiting requests beyond this get 503")
    p.add_argument("--max-model-len", type=int, default=None, help="context limit (default: the model's)")
    p.add_argument("--spec-max-rows", type=int, default=2,
                   help="auto mode: self-speculate while at most this many rows decode, else AR")


def build(args: argparse.Namespace):
    """(app, engine) from parsed arguments; the model is loaded here."""
    from .app import ServerConfig, create_app  # needs the 'serve' extra (fastapi)

    loaded = load_from_args(args)
    cfg = loaded.config
    context = args.max_model_len or cfg.max_position_embeddings
    engine = Engine(loaded.model, max_batch=args.max_batch, max_cached_tokens=args.max_cached_tokens,
                    max_waiting=args.max_waiting, spec_max_rows=args.spec_max_rows)
    name = args.served_model_name or Path(str(loaded.source)).name
    config = ServerConfig(model_name=name, mode=args.mode, block_size=args.block_size, device=args.device,
                          max_context=context, max_prompt_tokens=context - 1)
    return create_app(engine, loaded.tokenizer, loaded.eos_token_ids, config), engine


def run(args: argparse.Namespace) -> int:
    import uvicorn

    app, engine = build(args)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    finally:
        engine.close()
    return 0
