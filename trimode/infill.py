"""``trimode infill``: fill the middle between a prefix and a suffix by denoising (see
:mod:`trimode.decoding.infill` for the layout), text out, statistics to stderr."""

from __future__ import annotations

import argparse
import json
import sys

from .cli_common import COUNTING, UsageError, add_model_args, load_text_model, positive, threshold_arg
from .decoding import GenerationConfig, spec_for, thresholds
from .decoding.infill import PLACEMENTS, InfillLayout, infill


def add_arguments(g: argparse.ArgumentParser) -> None:
    add_model_args(g)
    g.add_argument("--prefix", required=True, help="the text before the gap")
    g.add_argument("--suffix", required=True, help="the text after the gap")
    g.add_argument("--max-middle", type=positive, default=16, help="middle tokens to fill (every one is filled)")
    g.add_argument("--block-size", type=positive, default=None,
                   help="denoising block: suffix window + chunk (default: diffusion's block for the device)")
    g.add_argument("--window", type=int, default=None, help="suffix tokens the middle reads (default: half the block)")
    g.add_argument("--chunk", type=positive, default=None,
                   help="middle tokens denoised at a time (default: the block less the window)")
    g.add_argument("--placement", choices=PLACEMENTS, default="every",
                   help="which chunks of a long middle see the suffix window: every one, or the last one only")
    g.add_argument("--threshold", type=threshold_arg, default=...,
                   help="commit every slot at least this confident per forward (default 0.9; 'none' = a fixed count)")
    g.add_argument("--max-steps", type=positive, default=None, help="denoising forwards per chunk (default: its size)")
    g.add_argument("--no-adapter", action="store_true", help="denoise without the drafting adapter")
    g.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")


def run(args: argparse.Namespace) -> int:
    if args.window is not None and args.window < 0:
        raise UsageError(f"--window must be >= 0, got {args.window}")
    try:
        block = spec_for("diffusion").block(args.block_size, args.device)
        config = GenerationConfig(max_new_tokens=args.max_middle, block_size=block, max_steps=args.max_steps,
                                  use_adapter=not args.no_adapter, **thresholds(args.threshold))
    except ValueError as err:
        raise UsageError(str(err)) from None
    loaded = load_text_model(args, "infill")
    tok = loaded.tokenizer
    prefix, suffix = tok.encode(args.prefix), tok.encode(args.suffix, add_special_tokens=False)
    layout = InfillLayout(args.window, args.chunk, args.placement)
    result = infill(loaded.model, [prefix], [suffix], config, layout)
    middle = result.middles[0]
    text = tok.decode(middle, skip_special_tokens=True)
    s = result.stats
    if args.json:
        window, chunk = layout.resolve(block)
        print(json.dumps({"prefix": args.prefix, "middle": text, "suffix": args.suffix, "middle_ids": middle,
                          "prefix_tokens": len(prefix), "suffix_tokens": len(suffix), "block_size": block,
                          "window": window, "chunk": chunk, "placement": args.placement,
                          "generated_tokens": s.generated_tokens, "nfe": s.nfe, "forwards": dict(s.forwards),
                          "tokens_per_forward": s.tokens_per_forward, "block_steps": s.block_steps[0],
                          "elapsed_s": s.elapsed_s, "model": str(loaded.source), "counting": COUNTING}))
    else:
        print(f"{args.prefix}\033[1m{text}\033[0m{args.suffix}" if sys.stdout.isatty() else args.prefix + text + args.suffix)
        print(f"[infill] {s.generated_tokens} middle tokens, {s.nfe} forwards ({s.tokens_per_forward:.2f} tok/fwd), "
              f"{s.elapsed_s:.2f} s", file=sys.stderr)
    return 0
