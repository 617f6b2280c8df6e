"""Every drafting mode, decoded, on more prompts than the demo's three (docs/default_model.md, "Levers").

    python bench/levers/decode.py DELTA [DELTA ...] [--per-set 3] [--heldout 4] [--out FILE]

For each delta: linear-spec, quadratic-spec and diffusion at the demo's CPU blocks and threshold,
greedy, batch 1, 64 new tokens, on (a) the bundled eval prompts, the first --per-set of each of
code, chat and math (the demo uses the first one of each), and (b) held-out distillation prompts,
the first --heldout of recipes/default_model_data/heldout and of heldout-prose (prompts the model
answered in the distillation style, never trained on). Tokens per forward count every forward,
the prefill included, as in `trimode demo`; accepted is tokens per self-speculation cycle;
repeated_3grams is the share of repeated 3-grams in the generated text (AR's own is given once).
Ends with one JSON line.
"""
import argparse, json, sys
from pathlib import Path

import torch

from trimode.decoding import GenerationConfig, spec_for, thresholds
from trimode.eval import compare
from trimode.eval import prompts as bundled
from trimode.eval.compare import repetition
from trimode.model import load
from trimode.runinfo import machine_info

p = argparse.ArgumentParser()
p.add_argument("deltas", nargs="+")
p.add_argument("--per-set", type=int, default=3)
p.add_argument("--heldout", type=int, default=4)
p.add_argument("--max-new-tokens", type=int, default=64)
p.add_argument("--data", default="recipes/default_model_data")
p.add_argument("--no-ar", action="store_true", help="skip AR's own repetition figure")
p.add_argument("--out")
args = p.parse_args()


def prompt_sets(tok) -> dict[str, list[list[int]]]:
    evals = [item.ids(tok) for name in ("code", "chat", "math") for item in bundled.load(name, "eval")[: args.per_set]]
    held = []
    for folder in ("heldout", "heldout-prose"):
        lines = next(Path(args.data, folder).glob("*.jsonl")).read_text().splitlines()[: args.heldout]
        held += [tok.encode_chat(json.loads(line)["messages"][:1]) for line in lines]
    return {"eval": evals, "heldout": held}


def run(model, mode, prompts, eos):
    block = spec_for(mode).block(None, "cpu")
    cfg = GenerationConfig(max_new_tokens=args.max_new_tokens, eos_token_ids=eos, block_size=block, **thresholds())
    r = compare.run_mode(model, mode, prompts, cfg)
    return r, {"block": block if mode != "ar" else None, "tokens": r.tokens, "forwards": r.forwards,
               "tokens_per_forward": round(r.tokens_per_forward, 3),
               "accepted": None if r.mean_accepted is None else round(r.mean_accepted, 3),
               "repeated_3grams": round(repetition(r.sequences), 3)}


result = {"benchmark": "drafting-modes-decoded", "command": "python bench/levers/decode.py " + " ".join(sys.argv[1:]),
          "max_new_tokens": args.max_new_tokens, "machine": machine_info(), "ar": {}, "deltas": {}}
torch.set_grad_enabled(False)
for n, delta in enumerate(args.deltas):
    loaded = load(delta, dtype=torch.float32, device="cpu")
    sets = prompt_sets(loaded.tokenizer)
    row = {}
    for name, prompts in sets.items():
        if n == 0 and not args.no_ar:
            result["ar"][name] = run(loaded.model, "ar", prompts, loaded.eos_token_ids)[1]
        row[name] = {}
        for mode in ("linear-spec", "quadratic-spec", "diffusion"):
            r, stats = run(loaded.model, mode, prompts, loaded.eos_token_ids)
            if mode == "diffusion":
                stats["texts"] = [loaded.tokenizer.decode(s)[:160] for s in r.sequences[: len(prompts)]]
            row[name][mode] = stats
            print(delta, name, mode, {k: v for k, v in stats.items() if k != "texts"}, file=sys.stderr, flush=True)
    result["deltas"][delta] = row
print(json.dumps(result))
if args.out:
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
