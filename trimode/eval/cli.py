"""``trimode eval humaneval|gsm8k|humaneval-infill|humaneval-revise``: accuracy per mode and setting
(per method for single-line infilling; per revision round for corrupted solutions), with a results file."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from ..cli_common import UsageError, add_model_args, load_from_args
from ..decoding import MODES, SPECS
from ..decoding.stop import StopStrings
from ..model.defaults import FALLBACK_MASK_TOKEN
from . import gsm8k, humaneval, infilling, revision
from .generation import sweep
from .runner import evaluate, summary_line

TASKS = ("humaneval", "gsm8k", "humaneval-infill", "humaneval-revise")
DEFAULT_MAX_NEW = {"humaneval": 256, "gsm8k": 256, "humaneval-infill": 96, "humaneval-revise": 1}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task", choices=TASKS)
    add_model_args(parser)
    parser.add_argument("--mode", nargs="+", choices=MODES, default=list(MODES),
                        help="modes to evaluate, in order (default: all; AR first gives the equals_ar figures)")
    parser.add_argument("--limit", type=int, help="only the first N problems")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per generate call")
    parser.add_argument("--max-new-tokens", type=int, help="default 256")
    parser.add_argument("--block-size", type=int, nargs="+", default=[],
                        help="diffusion block sizes to sweep (default: the mode's block for the device)")
    parser.add_argument("--threshold", type=float, nargs="+", default=[],
                        help="diffusion confidence thresholds to sweep (default 0.9)")
    parser.add_argument("--linear-block", type=int, nargs="+", default=[], help="linear-spec blocks (default: per device)")
    parser.add_argument("--quadratic-block", type=int, nargs="+", default=[], help="quadratic-spec blocks (default: per device)")
    parser.add_argument("--timeout", type=float, default=5.0, help="humaneval: seconds per test program")
    infill = parser.add_argument_group("humaneval-infill")
    infill.add_argument("--methods", nargs="+", choices=infilling.METHODS, default=list(infilling.METHODS),
                        help="infill (denoising), ar-prefix (AR on the prefix alone), ar-fim (AR shown prefix and suffix)")
    infill.add_argument("--budget", default="24", help="infill: middle tokens per task, or 'oracle' (the true line's count)")
    infill.add_argument("--window", type=int, default=None, help="infill: suffix tokens read (default: half the block)")
    infill.add_argument("--chunk", type=int, default=None, help="infill: middle tokens denoised at a time")
    infill.add_argument("--placement", choices=("every", "last"), default="every")
    rev = parser.add_argument_group("humaneval-revise")
    rev.add_argument("--corrupt", type=int, nargs="+", default=[1, 2, 4], help="tokens corrupted per solution (a sweep)")
    rev.add_argument("--rounds", type=int, default=4, help="revision rounds, each re-masking as many tokens as were corrupted")
    parser.add_argument("--out", type=Path, help="results file (default: bench/results/<task>.<model>.<device>.json)")


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    max_new = args.max_new_tokens or DEFAULT_MAX_NEW[args.task]
    if max_new < 1:
        raise UsageError(f"--max-new-tokens must be >= 1, got {max_new}")
    loaded = load_from_args(args, default_mask_token=FALLBACK_MASK_TOKEN)
    if loaded.tokenizer is None:
        raise UsageError(f"{loaded.source} has no tokenizer; evaluations need text prompts")
    if args.task == "humaneval-infill":
        return run_infilling(args, loaded)
    if args.task == "humaneval-revise":
        return run_revision(args, loaded)
    if any(SPECS[m].needs_mask for m in args.mode) and loaded.config.mask_token_id is None:
        raise UsageError(f"{loaded.source} has no mask token; pass --mask-token for the non-AR modes")
    settings = sweep(args.mode, args.block_size, args.threshold, args.linear_block, args.quadratic_block, args.device)
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


def run_infilling(args: argparse.Namespace, loaded) -> int:
    import json

    from ..decoding.infill import InfillLayout

    try:
        budget = infilling.budget_arg(args.budget)
        block = diffusion_block(args)
        layout = InfillLayout(args.window, args.chunk, args.placement)
        layout.resolve(block)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if "infill" in args.methods and loaded.config.mask_token_id is None:
        raise UsageError(f"{loaded.source} has no mask token; pass --mask-token for the infill method")
    items = infilling.tasks(args.limit)
    result = infilling.evaluate(loaded, args.methods, items, budget=budget, block_size=block, layout=layout,
                                batch_size=args.batch_size, timeout=args.timeout)
    out = save(args, loaded, result)
    print(f"{'method':<12} {'pass@1':>7} {'passed':>7} {'tok/fwd':>8} {'s':>7}")
    for r in result["results"]:
        tpf = r["generated_tokens"] / r["nfe"] if r["nfe"] else 0.0
        print(f"{r['method']:<12} {r['pass_at_1']:>7.3f} {r['passed']:>7} {tpf:>8.2f} {r['seconds']:>7.1f}")
    print(f"results: {out}")
    print(json.dumps({"task": result["task"], "tasks": result["tasks"],
                      **{r["method"]: r["pass_at_1"] for r in result["results"]}}))
    return 0


def run_revision(args: argparse.Namespace, loaded) -> int:
    import json

    if args.rounds < 1 or min(args.corrupt) < 1:
        raise UsageError(f"--rounds and --corrupt must be >= 1, got {args.rounds} and {args.corrupt}")
    if loaded.config.mask_token_id is None:
        raise UsageError(f"{loaded.source} has no mask token; pass --mask-token")
    try:
        block = diffusion_block(args)
    except ValueError as err:
        raise UsageError(str(err)) from None
    result = revision.evaluate(loaded, args.corrupt, rounds=args.rounds, block_size=block, limit=args.limit,
                               timeout=args.timeout)
    out = save(args, loaded, result)
    print(f"{'k':>3} {'corrupted':>9}  passing after round 0..{args.rounds}")
    for r in result["results"]:
        print(f"{r['k']:>3} {r['corrupted']:>9}  " + " ".join(f"{x:.3f}" for x in r["share_passing_after_round"]))
    print(f"results: {out}")
    print(json.dumps({"task": result["task"], **{f"k{r['k']}": r["share_passing_after_round"] for r in result["results"]}}))
    return 0


def diffusion_block(args: argparse.Namespace) -> int:
    """The one block infilling and revision denoise in: the first --block-size, else diffusion's for the device."""
    return SPECS["diffusion"].block(args.block_size[0] if args.block_size else None, args.device)


def save(args: argparse.Namespace, loaded, result: dict) -> Path:
    """Write ``result`` with the command and machine to --out (default: bench/results/...); return the path."""
    import json

    from ..runinfo import machine_info

    result.update(command="trimode " + " ".join(sys.argv[1:]), machine=machine_info())
    out = args.out or default_out(args.task, loaded.source, args.device)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    return out
