"""Every decoding mode on the same prompts: forwards, tokens per forward, tokens/s, accepted lengths,
and agreement with greedy AR.

Counting (as everywhere in trimode): generated tokens exclude the prompt and include EOS; nfe counts
every forward, the prefill included. Timings are wall time of the whole call, median of
``--repeats``, batch 1 (one prompt after another).
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch

from . import machine_info, write_result

DEFAULT_PROMPTS = [
    "The history of the Roman Empire",
    "def fibonacci(n):",
    "Photosynthesis is the process by which",
]


def run(args: argparse.Namespace) -> dict:
    from ..decoding import MODES, GenerationConfig, decoder_for
    from ..model import load
    from ..model.convert import resolve_token, set_mask_token
    from ..model.defaults import model_path

    if args.threads:
        torch.set_num_threads(args.threads)
    path = model_path(args.model)
    loaded = load(path, dtype=getattr(torch, args.dtype))
    if loaded.config.mask_token_id is None:
        if args.mask_token is None:
            raise SystemExit(f"{path} has no mask_token_id; pass --mask-token (an unused special token)")
        set_mask_token(loaded.model, resolve_token(loaded.tokenizer, args.mask_token))
    if args.prompt_ids:
        prompts = [[int(x) for x in p.split(",")] for p in args.prompt_ids]
    else:
        prompts = [loaded.tokenizer.encode(p) for p in (args.prompt or DEFAULT_PROMPTS)]
    rows, reference = [], None
    for mode in args.modes or MODES:
        if mode not in MODES:
            raise SystemExit(f"unknown mode {mode!r}; expected some of {MODES}")
        block = args.quadratic_block if mode == "quadratic-spec" else args.block_size
        config = GenerationConfig(
            max_new_tokens=args.new_tokens, eos_token_ids=loaded.eos_token_ids, block_size=block,
            threshold=args.threshold, draft_threshold=0.0,
        )
        decoder = decoder_for(mode, loaded.model)
        decoder.generate([prompts[0]], GenerationConfig(max_new_tokens=4, block_size=block))  # warm-up
        times, tokens, nfe, accepted, outputs = [], 0, 0, [], []
        for prompt in prompts:
            runs = [decoder.generate([prompt], config) for _ in range(args.repeats)]
            times.append(statistics.median(r.stats.elapsed_s for r in runs))
            tokens += runs[0].stats.generated_tokens
            nfe += runs[0].stats.nfe
            accepted += [a for row in runs[0].stats.accepted_lengths for a in row]
            outputs.append(runs[0].sequences[0])
        if mode == "ar":
            reference = outputs
        rows.append({
            "mode": mode,
            "block_size": None if mode == "ar" else block,
            "generated_tokens": tokens,
            "nfe": nfe,
            "tokens_per_forward": round(tokens / nfe, 3),
            "tokens_per_second": round(tokens / sum(times), 2),
            "mean_accepted_length": round(sum(accepted) / len(accepted), 3) if accepted else None,
            "equals_greedy_ar": None if reference is None else outputs == reference,
        })
    return {
        "benchmark": "modes",
        "model": str(path),
        "dtype": args.dtype,
        "prompts": len(prompts),
        "new_tokens": args.new_tokens,
        "threshold": args.threshold,
        "counting": "generated tokens exclude the prompt, include EOS; nfe includes the prefill",
        "results": rows,
        "machine": machine_info(),
        "command": "trimode bench modes " + " ".join(sys.argv[3:]),
    }


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="trimode bench modes", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model")
    p.add_argument("--mask-token", help="mask token (id or text) for a checkpoint without one")
    p.add_argument("--modes", nargs="+")
    p.add_argument("--prompt", action="append")
    p.add_argument("--prompt-ids", action="append", help="comma-separated ids (repeatable)")
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--block-size", type=int, default=32)
    p.add_argument("--quadratic-block", type=int, default=8)
    p.add_argument("--threshold", type=float, default=0.9)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--threads", type=int)
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
