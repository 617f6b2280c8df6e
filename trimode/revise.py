"""``trimode revise``: re-mask the tokens the model is least sure of and denoise them again (see
:mod:`trimode.decoding.revise`), the revised text out, what changed to stderr."""

from __future__ import annotations

import argparse
import json
import sys

from .cli_common import UsageError, add_model_args, load_text_model, positive, threshold_arg
from .decoding import GenerationConfig, spec_for, thresholds
from .decoding.revise import revise


def add_arguments(g: argparse.ArgumentParser) -> None:
    add_model_args(g)
    g.add_argument("--text", required=True, help="the text to revise")
    g.add_argument("--context", default="", help="text before it, read but never revised (e.g. the prompt)")
    g.add_argument("--rounds", type=positive, default=1, help="re-mask-and-denoise rounds (each costs forwards)")
    g.add_argument("--tokens", type=positive, default=None,
                   help="tokens re-masked per round (default: a tenth of the text, at least 1)")
    g.add_argument("--block-size", type=positive, default=None, help="denoising block (default: diffusion's for the device)")
    g.add_argument("--threshold", type=threshold_arg, default=...,
                   help="commit every slot at least this confident per forward (default 0.9; 'none' = a fixed count)")
    g.add_argument("--no-adapter", action="store_true", help="denoise without the drafting adapter")
    g.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")


def run(args: argparse.Namespace) -> int:
    try:
        block = spec_for("diffusion").block(args.block_size, args.device)
        config = GenerationConfig(block_size=block, use_adapter=not args.no_adapter, **thresholds(args.threshold))
    except ValueError as err:
        raise UsageError(str(err)) from None
    loaded = load_text_model(args, "revise")
    tok = loaded.tokenizer
    context = tok.encode(args.context) if args.context else []
    text = tok.encode(args.text, add_special_tokens=not context)
    result = revise(loaded.model, context, text, config, rounds=args.rounds, per_round=args.tokens)

    def piece(t: int) -> str:
        return tok.decode([t])

    s = result.stats
    rounds = [[{"position": ch.position, "old": piece(ch.old), "new": piece(ch.new), "old_id": ch.old, "new_id": ch.new,
                "confidence_before": round(ch.before, 4), "confidence_after": round(ch.after, 4)}
               for ch in changes] for changes in result.rounds]
    revised = tok.decode(result.tokens, skip_special_tokens=True)
    if args.json:
        print(json.dumps({"text": args.text, "revised": revised, "rounds": rounds, "remasked": result.remasked,
                          "token_ids": result.tokens, "nfe": s.nfe, "forwards": dict(s.forwards),
                          "elapsed_s": s.elapsed_s, "model": str(loaded.source)}))
        return 0
    print(revised)
    for r, changes in enumerate(rounds, 1):
        print(f"round {r}: {len(result.remasked[r - 1])} re-masked, {len(changes)} changed", file=sys.stderr)
        for ch in changes:
            print(f"  @{ch['position']}: {ch['old']!r} ({ch['confidence_before']:.3f}) -> {ch['new']!r} "
                  f"({ch['confidence_after']:.3f})", file=sys.stderr)
    print(f"[revise] {s.nfe} forwards ({dict(s.forwards)}), {s.elapsed_s:.2f} s", file=sys.stderr)
    return 0
