"""``trimode serve``: load a checkpoint, start the engine, serve the OpenAI API with uvicorn."""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

from ..cli_common import UsageError, add_model_args, load_from_args
from ..decoding.spec import ENGINE_MODES
from ..engine import Engine
from .limits import BODY_TIMEOUT, HEADER_TIMEOUT, MAX_BODY_BYTES


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
    p.add_argument("--max-step-tokens", type=int, default=None,
                   help="tokens one forward may carry (rows x block or grid; joining prompts); wider requests are "
                        "refused (default: the device's, CPU 512, CUDA 8192)")
    p.add_argument("--max-body-bytes", type=int, default=MAX_BODY_BYTES, help="larger request bodies get 413")
    p.add_argument("--api-key", default=os.environ.get("TRIMODE_API_KEY"),
                   help="require 'Authorization: Bearer KEY' on /v1 and /metrics (default: $TRIMODE_API_KEY; none)")
    p.add_argument("--allowed-hosts", default=None,
                   help="comma-separated Host names to answer, '*' for any (default: loopback names when bound to "
                        "a loopback address, against DNS rebinding; any otherwise)")
    p.add_argument("--header-timeout", type=float, default=HEADER_TIMEOUT,
                   help="seconds a connection may take to send its request headers")
    p.add_argument("--body-timeout", type=float, default=BODY_TIMEOUT,
                   help="seconds a request body may pause before the connection is closed")


def build(args: argparse.Namespace):
    """(app, engine) from parsed arguments; the model is loaded here."""
    from .app import ServerConfig, create_app  # fastapi: imported only when serving
    from .guard import default_allowed_hosts

    check_limits(args)
    loaded = load_from_args(args, verbose=True)
    cfg = loaded.config
    context = args.max_model_len or cfg.max_position_embeddings
    engine = Engine(loaded.model, max_batch=args.max_batch, max_cached_tokens=args.max_cached_tokens,
                    max_waiting=args.max_waiting, spec_max_rows=args.spec_max_rows, max_step_tokens=args.max_step_tokens)
    name = args.served_model_name or Path(str(loaded.source)).name
    config = ServerConfig(model_name=name, mode=args.mode, block_size=args.block_size, device=args.device,
                          max_context=context, max_prompt_tokens=context - 1, max_body_bytes=args.max_body_bytes,
                          api_key=args.api_key or None, allowed_hosts=default_allowed_hosts(args.host, hosts(args)))
    app = create_app(engine, loaded.tokenizer, loaded.eos_token_ids, config)
    app.state.banner = banner(args, engine, loaded.source, name, context)
    return app, engine


def hosts(args: argparse.Namespace) -> list[str] | None:
    return [h.strip() for h in args.allowed_hosts.split(",") if h.strip()] if args.allowed_hosts else None


def check_limits(args: argparse.Namespace) -> None:
    """UsageError for a limit that cannot work, found before the model loads."""
    for name in ("max_step_tokens", "max_body_bytes", "header_timeout", "body_timeout"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    if args.allowed_hosts is not None and not hosts(args):
        raise UsageError(f"--allowed-hosts must name at least one host (or '*'), got {args.allowed_hosts!r}")


def check_port(host: str, port: int) -> None:
    """UsageError when ``host:port`` cannot be bound, found before the model loads (seconds to minutes)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds it
        try:
            probe.bind((host, port))
        except OSError as err:
            raise UsageError(f"cannot serve on {host}:{port}: {err.strerror or err} (choose another --port)") from None


def banner(args: argparse.Namespace, engine: Engine, loaded_source, name: str, context: int) -> str:
    """The one start-up line: what is served, how, where, within which limits."""
    return (f"trimode serve: model {name!r} ({loaded_source}), default mode {args.mode}, {args.device} {args.dtype}, "
            f"http://{args.host}:{args.port}/v1, max batch {engine.max_batch}, max step tokens "
            f"{engine.max_step_tokens}, max cached tokens "
            f"{engine.max_cached_tokens}, max waiting {engine.max_waiting}, context {context} tokens"
            f"{', API key required' if args.api_key else ''}")


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from .http import uvicorn_config

    if not 0 < args.port < 65536:
        raise UsageError(f"--port must be in 1..65535, got {args.port}")
    check_port(args.host, args.port)
    app, engine = build(args)
    print(app.state.banner, file=sys.stderr, flush=True)
    try:
        uvicorn.Server(uvicorn_config(app, args.host, args.port, header_timeout=args.header_timeout,
                                      body_timeout=args.body_timeout)).run()
    finally:
        engine.close()
    return 0
