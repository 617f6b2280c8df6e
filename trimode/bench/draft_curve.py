"""Held-out tokens per forward per mode, and per-slot draft accuracy, against CPU training minutes.

Reads a drafting-adapter run folder (``trimode train --objective adapter --eval-every N
--snapshot-every M``): ``eval.jsonl`` (teacher-forced draft metrics on held-out sequences, with the
training seconds spent to reach each step) and ``snapshots/step_N`` (the adapter as a delta at
those steps). Every snapshot decodes the held-out demo prompts (the bundled ``eval`` split) in
every non-AR mode with the demo's per-device blocks, greedy, batch 1. Tokens per forward count
every forward, the prefill included, and the generated tokens include EOS, as in ``trimode demo``.
Ends with a table, a JSON line, and (``--plot``) a PNG.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from ..decoding.spec import SPECS
from ..demo import MODES as DEMO_MODES
from ..demo import demo_prompts, run_mode
from ..eval.compare import repetition
from ..model import load
from ..runinfo import machine_info, write_result

# The modes that draft, in the demo's order.
MODES = tuple(m for m in DEMO_MODES if SPECS[m].needs_mask)


def snapshot_rows(run: Path, prompts: int, max_new_tokens: int, device: str, every: int) -> list[dict]:
    evals = {e["step"]: e for e in map(json.loads, (run / "eval.jsonl").read_text().splitlines()) if e}
    folders = sorted((run / "snapshots").glob("step_*"))[::every]
    settings = argparse.Namespace(device=device, block_size=None, max_new_tokens=max_new_tokens, threshold=...)
    rows = []
    for folder in folders:
        step = int(folder.name.split("_")[1])
        loaded = load(folder, dtype=torch.float32, device=device)
        chosen = demo_prompts(loaded.tokenizer, prompts)
        e = evals.get(step, {})
        row = {"step": step, "train_min": round(e.get("train_s", 0.0) / 60, 2),
               "accepted_per_block": e.get("accepted_per_block"), "slot_accuracy": e.get("slot_accuracy")}
        for mode in MODES:
            result = run_mode(loaded, mode, chosen, settings, stream=False)
            row[mode] = {"block": result.block, "tokens_per_forward": round(result.tokens_per_forward, 3),
                         "repeated_3grams": round(repetition(result.sequences), 3)}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def plot(result: dict, path: Path) -> Path:
    from .plots import _pyplot

    plt = _pyplot()
    rows = result["snapshots"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    minutes = [r["train_min"] for r in rows]
    for mode in MODES:
        left.plot(minutes, [r[mode]["tokens_per_forward"] for r in rows], "o-",
                  label=f"{mode} (block {rows[0][mode]['block']})")
    left.axhline(1.0, color="grey", lw=0.8, ls="--", label="AR")
    left.set(xlabel="training minutes (2-core CPU)", ylabel="tokens per forward (held-out prompts)",
             title="tokens per forward vs CPU training time")
    left.legend(fontsize=8)
    curve = result["eval_curve"]
    slots = len(curve[-1]["slot_accuracy"]) if curve and curve[-1].get("slot_accuracy") else 0
    for j in range(slots):
        right.plot([e["train_min"] for e in curve], [e["slot_accuracy"][j] for e in curve], label=f"slot {j + 1}")
    right.set(xlabel="training minutes (2-core CPU)", ylabel="draft accuracy (held-out, teacher forced)",
              title="per-slot draft accuracy vs CPU training time")
    right.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="trimode bench draft-curve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="the training run folder")
    p.add_argument("--prompts", type=int, default=6, help="held-out demo prompts per snapshot")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--every", type=int, default=1, help="use every k-th snapshot")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", help="results JSON")
    p.add_argument("--plot", type=Path, help="PNG to write")
    args = p.parse_args(argv)
    if not (args.run / "eval.jsonl").is_file():
        raise SystemExit(f"{args.run} has no eval.jsonl: train with --eval-every N --snapshot-every M")
    rows = snapshot_rows(args.run, args.prompts, args.max_new_tokens, args.device, args.every)
    if not rows:
        raise SystemExit(f"{args.run}/snapshots holds no step_* deltas: train with --snapshot-every M")
    curve = [{"step": e["step"], "train_min": round(e["train_s"] / 60, 2), "accepted_per_block": e.get("accepted_per_block"),
              "slot_accuracy": e.get("slot_accuracy"), **({"sets": e["sets"]} if "sets" in e else {})}
             for e in map(json.loads, (args.run / "eval.jsonl").read_text().splitlines()) if e]
    result = {"benchmark": "draft-curve", "run": str(args.run), "prompts": args.prompts,
              "max_new_tokens": args.max_new_tokens,
              "counting": "tokens include EOS, exclude the prompt; forwards include the prefill; minutes = summed "
                          "training-step wall time on this machine (evaluation excluded); repeated_3grams = "
                          "share of an output's 3-grams repeating an earlier one (degeneracy)",
              "snapshots": rows, "eval_curve": curve, "machine": machine_info(),
              "command": "trimode bench draft-curve " + " ".join(argv)}
    print(f"{'step':>6} {'min':>6} {'acc/blk':>7} " + " ".join(f"{m:>15}" for m in MODES) + f" {'diff rep3':>9}")
    for r in rows:
        acc = "-" if r["accepted_per_block"] is None else f"{r['accepted_per_block']:.2f}"
        print(f"{r['step']:>6} {r['train_min']:>6.1f} {acc:>7} " +
              " ".join(f"{r[m]['tokens_per_forward']:>15.2f}" for m in MODES) +
              f" {r['diffusion']['repeated_3grams']:>9.2f}")
    if args.plot:
        plot(result, args.plot)
    write_result(result, args.out)
    return 0
