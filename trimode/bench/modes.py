"""Every decoding mode on the same prompts: forwards, tokens per forward, tokens/s, accepted lengths,
and agreement with greedy AR.

Counting (as everywhere in trimode): generated tokens exclude the prompt and include EOS; nfe counts
every forward, the prefill included. Timings are wall time of the whole call, median of
``--repeats``, batch 1 (one prompt after another).
"""

from __future__ import annotations

import argparse
import sys

from ..cli_common import UsageError, add_model_args, load_from_args, threshold_arg
from ..decoding import MODES, GenerationConfig, spec_for, thresholds
from ..eval.compare import run_mode, versus_ar
from ..runinfo import machine_info, write_result

DEFAULT_PROMPTS = [
    "The history of the Roman Empire",
    "def fibonacci(n):",
    "Photosynthesis is the process by which",
]


def run(args: argparse.Namespace) -> dict:
    loaded = load_from_args(args)
    path = loaded.source
    if loaded.config.mask_token_id is None:
        raise UsageError(f"{path} has no mask_token_id; pass --mask-token (an unused special token)")
    if args.prompt_ids:
        prompts = [[int(x) for x in p.split(",")] for p in args.prompt_ids]
    else:
        prompts = [loaded.tokenizer.encode(p) for p in (args.prompt or DEFAULT_PROMPTS)]
    runs = []
    for mode in args.modes:
        block = spec_for(mode).block(args.quadratic_block if mode == "quadratic-spec" else args.block_size, args.device)
        config = GenerationConfig(
            max_new_tokens=args.new_tokens, eos_token_ids=loaded.eos_token_ids, block_size=block,
            **thresholds(args.threshold),
        )
        runs.append(run_mode(loaded.model, mode, prompts, config, repeats=args.repeats))
    rows = [{
        "mode": r["mode"],
        "block_size": r["block"],
        "generated_tokens": r["tokens"],
        "nfe": r["forwards"],
        "tokens_per_forward": r["tokens_per_forward"],
        "tokens_per_second": r["tokens_per_second"],
        "mean_accepted_length": r["mean_accepted"],
        "equals_greedy_ar": r["equals_ar"],
    } for r in versus_ar(runs)]
    return {
        "benchmark": "modes",
        "model": str(path),
        "dtype": args.dtype,
        "prompts": len(prompts),
        "new_tokens": args.new_tokens,
        "threshold": None if args.threshold is ... else args.threshold,
        "counting": "generated tokens exclude the prompt, include EOS; nfe includes the prefill",
        "results": rows,
        "machine": machine_info(),
        "command": "trimode bench modes " + " ".join(sys.argv[3:]),
    }


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="trimode bench modes", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--prompt", action="append")
    p.add_argument("--prompt-ids", action="append", help="comma-separated ids (repeatable)")
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--block-size", type=int, help="diffusion / linear-spec block (default: per device)")
    p.add_argument("--quadratic-block", type=int, help="quadratic-spec block (default: per device)")
    p.add_argument("--threshold", type=threshold_arg, default=..., help="default: diffusion 0.9, linear-spec 0")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out")
    args = p.parse_args(argv)
    result = run(args)
    print(f"{'mode':<16} {'block':>5} {'nfe':>6} {'tok/fwd':>8} {'tok/s':>8} {'accept':>7} {'= AR':>6}")
    for r in result["results"]:
        acc = "" if r["mean_accepted_length"] is None else f"{r['mean_accepted_length']:.2f}"
        print(f"{r['mode']:<16} {r['block_size'] or ''!s:>5} {r['nfe']:>6} {r['tokens_per_forward']:>8.2f} "
              f"{r['tokens_per_second']:>8.1f} {acc:>7} {r['equals_greedy_ar']!s:>6}")
    write_result(result, args.out)
    return 0
