"""``trimode demo``: the default model in every mode, streamed, then one table of what each cost.

Prompts are held-out items of the bundled sets (the ``eval`` split: never trained on), one each of
code, chat and math, in the checkpoint's chat template. Every mode decodes the same prompts at
batch 1, greedy, with the block sizes chosen for the device (:data:`DEVICE_BLOCKS`, from the
forward-time curve of ``trimode bench forward-curve``). A warm-up call per mode is not timed, and
the time spent printing streamed text is kept out of the timings.

Counting, as everywhere in trimode: generated tokens exclude the prompt and include EOS; forwards
count every model call, prefill included (draft and verify forwards both count).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass

MODES = ("ar", "linear-spec", "quadratic-spec", "diffusion")
# Block sizes per device type. CPU: a forward over T tokens costs far more than one over 1 token
# beyond a few tokens (bench/results/forward_curve.*.cpu-2core-epyc.json), so short blocks win;
# GPU: width is nearly free at batch 1, so the published block of 32 is kept.
DEVICE_BLOCKS = {
    "cpu": {"linear-spec": 8, "quadratic-spec": 4, "diffusion": 8},
    "cuda": {"linear-spec": 32, "quadratic-spec": 8, "diffusion": 32},
}


@dataclass
class ModeRun:
    mode: str
    block: int | None
    tokens: int = 0
    forwards: int = 0
    seconds: float = 0.0
    sequences: list[list[int]] | None = None
    accepted: list[int] | None = None

    @property
    def tokens_per_forward(self) -> float:
        return self.tokens / self.forwards if self.forwards else 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


class TextStream:
    """Prints a row's text as its ids arrive (holding back an incomplete UTF-8 sequence)."""

    def __init__(self, tokenizer, out=None) -> None:
        self.tokenizer, self.out = tokenizer, out or sys.stdout
        self.ids: list[int] = []
        self.shown = 0

    def __call__(self, row: int, new: list[int]) -> None:
        self.ids += new
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return
        self.out.write(text[self.shown :])
        self.out.flush()
        self.shown = len(text)


def demo_prompts(tokenizer, count: int) -> list[tuple[str, list[int]]]:
    from .eval import prompts as bundled

    sets = [bundled.load(name, "eval") for name in ("code", "chat", "math")]
    chosen = []
    for i in range(count):
        items = sets[i % len(sets)]
        chosen.append(items[(i // len(sets)) % len(items)])
    return [(item.prompt, item.ids(tokenizer)) for item in chosen]


def mode_config(mode: str, device: str, args: argparse.Namespace, eos: tuple[int, ...]):
    from .decoding import GenerationConfig

    block = None if mode == "ar" else (args.block_size or DEVICE_BLOCKS["cuda" if device.startswith("cuda") else "cpu"][mode])
    cfg = GenerationConfig(max_new_tokens=args.max_new_tokens, eos_token_ids=eos, block_size=block or 1,
                           threshold=args.threshold, draft_threshold=0.0)
    return block, cfg


def run_mode(loaded, mode: str, prompts, args, stream: bool) -> ModeRun:
    from .decoding import GenerationConfig, decoder_for

    block, cfg = mode_config(mode, args.device, args, loaded.eos_token_ids)
    decoder = decoder_for(mode, loaded.model)
    decoder.generate([prompts[0][1]], GenerationConfig(max_new_tokens=4, block_size=cfg.block_size))  # warm-up
    result = ModeRun(mode, block, sequences=[], accepted=[])
    for i, (text, ids) in enumerate(prompts):
        if stream:
            print(f"\n--- {mode}{f' (block {block})' if block else ''} · prompt {i + 1}: {text.splitlines()[0][:70]}")
        out = decoder.generate([ids], cfg, on_tokens=TextStream(loaded.tokenizer) if stream else None)
        if stream:
            print()
        s = out.stats
        result.tokens += s.generated_tokens
        result.forwards += s.nfe
        result.seconds += s.elapsed_s
        result.sequences.append(out.sequences[0])
        if s.accepted_lengths:
            result.accepted += s.accepted_lengths[0]
    return result


def table(runs: list[ModeRun]) -> list[dict]:
    ar = next((r for r in runs if r.mode == "ar"), None)
    rows = []
    for r in runs:
        rows.append({
            "mode": r.mode,
            "block": r.block,
            "tokens": r.tokens,
            "forwards": r.forwards,
            "tokens_per_forward": round(r.tokens_per_forward, 3),
            "tokens_per_second": round(r.tokens_per_second, 2),
            "speedup_vs_ar": round(r.tokens_per_second / ar.tokens_per_second, 3) if ar and ar.tokens_per_second else None,
            "equals_ar": (r.sequences == ar.sequences) if ar else None,
            "mean_accepted": round(sum(r.accepted) / len(r.accepted), 3) if r.accepted else None,
        })
    return rows


def print_table(rows: list[dict], out=None) -> None:
    out = out or sys.stdout
    head = f"{'mode':<15} {'block':>5} {'tokens':>6} {'fwd':>5} {'tok/fwd':>7} {'tok/s':>7} {'x AR':>6} {'= AR':>5}"
    print("\n" + head, file=out)
    print("-" * len(head), file=out)
    for r in rows:
        block = "-" if r["block"] is None else str(r["block"])
        speed = "-" if r["speedup_vs_ar"] is None else f"{r['speedup_vs_ar']:.2f}"
        same = "-" if r["equals_ar"] is None else ("yes" if r["equals_ar"] else "no")
        print(f"{r['mode']:<15} {block:>5} {r['tokens']:>6} {r['forwards']:>5} {r['tokens_per_forward']:>7.2f} "
              f"{r['tokens_per_second']:>7.1f} {speed:>6} {same:>5}", file=out)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .cli import _add_model_args

    _add_model_args(p)
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="modes to run, in order (AR first)")
    p.add_argument("--prompts", type=int, default=3, help="how many held-out prompts (code, chat, math, ...)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--block-size", type=int, help="one block size for every non-AR mode (default: per device)")
    p.add_argument("--threshold", type=float, default=0.9, help="diffusion confidence threshold")
    p.add_argument("--mask-token", default=None,
                   help="mask token for a checkpoint without one (default: <empty_output> when the tokenizer has it)")
    p.add_argument("--no-stream", action="store_true", help="print only the table")
    p.add_argument("--json", action="store_true", help="end with one JSON line")


def run(args: argparse.Namespace) -> int:
    from .cli import UsageError, _load
    from .eval.generation import ensure_mask_token

    if args.max_new_tokens < 1 or args.prompts < 1:
        raise UsageError("--max-new-tokens and --prompts must be >= 1")
    loaded = _load(args)
    if loaded.tokenizer is None:
        raise UsageError(f"{loaded.source} has no tokenizer; the demo needs one to show text")
    if set(args.modes) - {"ar"} and ensure_mask_token(loaded, args.mask_token) is None:
        raise UsageError(f"{loaded.source} has no mask token; pass --mask-token for the non-AR modes")
    prompts = demo_prompts(loaded.tokenizer, args.prompts)
    print(f"model: {loaded.source} ({loaded.format}); {len(prompts)} held-out prompts, "
          f"{args.max_new_tokens} new tokens max, greedy, batch 1, {args.device}")
    runs = [run_mode(loaded, mode, prompts, args, stream=not args.no_stream) for mode in args.modes]
    rows = table(runs)
    print_table(rows)
    print("tokens exclude the prompt, include EOS; forwards count every model call (prefill, draft, verify, "
          "denoise, commit); x AR = tokens/s over AR's on the same prompts")
    if args.json:
        print(json.dumps({"demo": rows, "model": str(loaded.source), "device": args.device,
                          "max_new_tokens": args.max_new_tokens, "prompts": [p for p, _ in prompts]}))
    return 0
