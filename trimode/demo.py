"""``trimode demo``: the default model in every mode, streamed, then one table of what each cost.

Prompts are held-out items of the bundled sets (the ``eval`` split: never trained on), one each of
code, chat and math, in the checkpoint's chat template. Every mode decodes the same prompts at
batch 1, greedy, with each mode's block for the device (:mod:`trimode.decoding.spec`, chosen from the
forward-time curve of ``trimode bench forward-curve``). A warm-up call per mode is not timed, and
the time spent printing streamed text is kept out of the timings.

Counting, as everywhere in trimode: generated tokens exclude the prompt and include EOS; forwards
count every model call, prefill included (draft and verify forwards both count).
"""

from __future__ import annotations

import argparse
import json
import sys

from .cli_common import (
    TextPrinter,
    UsageError,
    add_model_args,
    load_from_args,
    threshold_arg,
)
from .decoding import MODES as DECODER_MODES
from .decoding import SPECS, GenerationConfig, spec_for, thresholds
from .eval import compare
from .eval import prompts as bundled
from .eval.compare import ModeRun
from .model.defaults import FALLBACK_MASK_TOKEN

# AR first (the reference), then the lossless modes, then diffusion.
MODES = tuple(sorted(DECODER_MODES, key=lambda m: (m != "ar", not SPECS[m].lossless)))


def demo_prompts(tokenizer, count: int) -> list[tuple[str, list[int]]]:
    sets = [bundled.load(name, "eval") for name in ("code", "chat", "math")]
    chosen = []
    for i in range(count):
        items = sets[i % len(sets)]
        chosen.append(items[(i // len(sets)) % len(items)])
    return [(item.prompt, item.ids(tokenizer)) for item in chosen]


def mode_config(mode: str, device: str, args: argparse.Namespace, eos: tuple[int, ...]):
    block = spec_for(mode).block(args.block_size, device)
    cfg = GenerationConfig(max_new_tokens=args.max_new_tokens, eos_token_ids=eos, block_size=block,
                           **thresholds(args.threshold))
    return (None if mode == "ar" else block), cfg


def run_mode(loaded, mode: str, prompts, args, stream: bool) -> ModeRun:
    block, cfg = mode_config(mode, args.device, args, loaded.eos_token_ids)

    def printer(i: int) -> TextPrinter:
        text = prompts[i][0]
        if i:
            print()  # end the previous prompt's streamed line
        print(f"\n--- {mode}{f' (block {block})' if block else ''} · prompt {i + 1}: {text.splitlines()[0][:70]}")
        return TextPrinter(loaded.tokenizer)

    result = compare.run_mode(loaded.model, mode, [ids for _, ids in prompts], cfg, stream=printer if stream else None)
    if stream:
        print()
    return result


def print_table(rows: list[dict], out=None) -> None:
    out = out or sys.stdout
    head = f"{'mode':<15} {'block':>5} {'tokens':>6} {'fwd':>5} {'tok/fwd':>7} {'tok/s':>7} {'x AR':>6} {'= AR':>5} {'rep3':>5}"
    print("\n" + head, file=out)
    print("-" * len(head), file=out)
    for r in rows:
        block = "-" if r["block"] is None else str(r["block"])
        speed = "-" if r["speedup_vs_ar"] is None else f"{r['speedup_vs_ar']:.2f}"
        same = "-" if r["equals_ar"] is None else ("yes" if r["equals_ar"] else "no")
        print(f"{r['mode']:<15} {block:>5} {r['tokens']:>6} {r['forwards']:>5} {r['tokens_per_forward']:>7.2f} "
              f"{r['tokens_per_second']:>7.1f} {speed:>6} {same:>5} {r['repeated_3grams']:>5.2f}", file=out)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="modes to run, in order (AR first)")
    p.add_argument("--prompts", type=int, default=3, help="how many held-out prompts (code, chat, math, ...)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--block-size", type=int, help="one block size for every non-AR mode (default: per device)")
    p.add_argument("--threshold", type=threshold_arg, default=...,
                   help="confidence threshold (default: diffusion 0.9, linear-spec one-forward drafts)")
    p.add_argument("--no-stream", action="store_true", help="print only the table")
    p.add_argument("--json", action="store_true", help="end with one JSON line")


def run(args: argparse.Namespace) -> int:
    if args.max_new_tokens < 1 or args.prompts < 1:
        raise UsageError("--max-new-tokens and --prompts must be >= 1")
    loaded = load_from_args(args, default_mask_token=FALLBACK_MASK_TOKEN)
    if loaded.tokenizer is None:
        raise UsageError(f"{loaded.source} has no tokenizer; the demo needs one to show text")
    if any(SPECS[m].needs_mask for m in args.modes) and loaded.config.mask_token_id is None:
        raise UsageError(f"{loaded.source} has no mask token; pass --mask-token for the non-AR modes")
    prompts = demo_prompts(loaded.tokenizer, args.prompts)
    print(f"model: {loaded.source} ({loaded.format}); {len(prompts)} held-out prompts, "
          f"{args.max_new_tokens} new tokens max, greedy, batch 1, {args.device}")
    runs = [run_mode(loaded, mode, prompts, args, stream=not args.no_stream) for mode in args.modes]
    rows = compare.versus_ar(runs)
    print_table(rows)
    print("tokens exclude the prompt, include EOS; forwards count every model call (prefill, draft, verify, "
          "denoise, commit); x AR = tokens/s over AR's on the same prompts; rep3 = share of 3-grams "
          "repeating an earlier one of the same output (degenerate text scores high)")
    if args.json:
        print(json.dumps({"demo": rows, "model": str(loaded.source), "device": args.device,
                          "max_new_tokens": args.max_new_tokens, "prompts": [p for p, _ in prompts]}))
    return 0
