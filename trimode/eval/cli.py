"""``trimode eval humaneval|gsm8k``: accuracy per mode and setting, with a results file."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

TASKS = ("humaneval", "gsm8k")
DEFAULT_MAX_NEW = {"humaneval": 256, "gsm8k": 256}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..cli import _add_model_args
    from ..decoding import MODES

    parser.add_argument("task", choices=TASKS)
    _add_model_args(parser)
    parser.add_argument("--mode", nargs="+", choices=MODES, default=list(MODES),
                        help="modes to evaluate, in order (default: all; AR first gives the equals_ar figures)")
    parser.add_argument("--limit", type=int, help="only the first N problems")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per generate call")
    parser.add_argument("--max-new-tokens", type=int, help="default 256")
    parser.add_argument("--block-size", type=int, nargs="+", default=[],
                        help="diffusion block sizes to sweep (default 32)")
    parser.add_argument("--threshold", type=float, nargs="+", default=[],
                        help="diffusion confidence thresholds to sweep (default 0.9)")
    parser.add_argument("--linear-block", type=int, nargs="+", default=[], help="linear-spec blocks (default 16)")
    parser.add_argument("--quadratic-block", type=int, nargs="+", default=[], help="quadratic-spec blocks (default 8)")
    parser.add_argument("--mask-token", help="mask token (id or text) for a checkpoint without one "
                                             "(default: <empty_output> when the tokenizer has it)")
    parser.add_argument("--timeout", type=float, default=5.0, help="humaneval: seconds per test program")
    parser.add_argument("--out", type=Path, help="results file (default: bench/results/<task>.<model>.<device>.json)")


def run(args: argparse.Namespace) -> int:
    from ..cli import UsageError, _load
    from ..decoding.stop import StopStrings
    from . import gsm8k, humaneval
    from .generation import ensure_mask_token, sweep
    from .runner import evaluate, summary_line

    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    max_new = args.max_new_tokens or DEFAULT_MAX_NEW[args.task]
    if max_new < 1:
        raise UsageError(f"--max-new-tokens must be >= 1, got {max_new}")
    loaded = _load(args)
    if loaded.tokenizer is None:
        raise UsageError(f"{loaded.source} has no tokenizer; evaluations need text prompts")
    if any(m != "ar" for m in args.mode) and ensure_mask_token(loaded, args.mask_token) is None:
        raise UsageError(f"{loaded.source} has no mask token; pass --mask-token for the non-AR modes")
    settings = sweep(args.mode, args.block_size, args.threshold, args.linear_block, args.quadratic_block)
    out = args.out or default_out(args.task, loaded.source, args.device)
    if args.task == "humaneval":
        items = humaneval.problems(args.limit)
        prompts = [humaneval.prompt_ids(loaded.tokenizer, p) for p in items]
        ids = [p["task_id"] for p in items]
        chat = humaneval.chat_style(loaded.tokenizer)
        score = humaneval.scorer(items, chat, timeout=args.timeout)
        stop = humaneval.ClosedCodeBlock(loaded.tokenizer) if chat else StopStrings(loaded.tokenizer, humaneval.STOP_STRINGS)
    else:
        items = gsm8k.questions(args.limit)
        prompts = [gsm8k.prompt_ids(loaded.tokenizer, q["question"]) for q in items]
        ids = [q["id"] for q in items]
        score, stop = gsm8k.scorer(items), None
    header = {"metric": "pass@1 (greedy, 1 sample)" if args.task == "humaneval" else "exact match",
              "device": args.device, "dtype": args.dtype}
    result = evaluate(args.task, loaded, settings, prompts, ids, score, max_new_tokens=max_new,
                      batch_size=args.batch_size, stop=stop, out=out, header=header)
    print(f"{'setting':<28} {'accuracy':>9} {'tok/fwd':>8} {'tok/s':>8} {'= AR':>6}")
    for r in result["results"]:
        same = "" if r["equals_ar"] is None else f"{r['equals_ar']:.2f}"
        print(f"{r['label']:<28} {r['accuracy']:>9.3f} {r['tokens_per_forward']:>8.2f} {r['tokens_per_second']:>8.1f} {same:>6}")
    print(f"results: {out}")
    print(summary_line(result))
    return 0


def default_out(task: str, source: Path, device: str) -> Path:
    model = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(source).stem)
    return Path("bench/results") / f"{task}.{model}.{device.replace(':', '')}.json"
