"""Does the drafter know its training examples by block phase? (docs/default_model.md, "Levers").

    python bench/levers/phase.py DELTA [DELTA ...] [--rows 32] [--out FILE]

For each delta, the teacher-forced accepted draft length per block of 8 (what linear-spec would
accept on the model's own greedy text) at every block phase 0..7, on sequences it trained on
(runs/default-model-cpu/answers, the first --rows packed sequences) and on held-out ones
(runs/default-model-cpu/heldout). The adapter was trained at phase 0 only: an advantage of phase 0
over the others on training text, absent on held-out text, is memorised (seed, slot) pairs, and
the other phases are examples it has not seen.
"""
import argparse, json, sys, time
from pathlib import Path

import torch

from trimode.model import load
from trimode.runinfo import machine_info
from trimode.train.data import DataConfig, build_dataset
from trimode.train.draft_objective import DraftSettings, draft_terms

p = argparse.ArgumentParser()
p.add_argument("deltas", nargs="+")
p.add_argument("--rows", type=int, default=32)
p.add_argument("--run", default="runs/default-model-cpu")
p.add_argument("--out")
args = p.parse_args()

result = {"benchmark": "draft-phase", "rows": args.rows, "command": "python bench/levers/phase.py " + " ".join(sys.argv[1:]),
          "counting": "teacher-forced accepted drafts per whole block of 8 (7 slots), blocks starting at the phase",
          "machine": machine_info(), "deltas": {}}
for delta in args.deltas:
    loaded = load(delta, pack=False)
    model, tok = loaded.model, loaded.tokenizer
    model.eval()
    row = {}
    for name in ("answers", "heldout"):
        ds = build_dataset(DataConfig(paths=(f"{args.run}/{name}",), seq_len=256), tok)
        x0 = torch.stack([ds[i]["input_ids"] for i in range(args.rows)])
        lm = torch.stack([ds[i]["loss_mask"] for i in range(args.rows)])
        per_phase = []
        for phase in range(8):
            acc = blocks = 0
            with torch.no_grad():
                for i in range(0, args.rows, 8):
                    logs = draft_terms(model, x0[i:i + 8], lm[i:i + 8], DraftSettings(8, "all", phase=phase)).logs
                    acc += logs["accepted_sum"]
                    blocks += logs["blocks"]
            per_phase.append(round(acc / blocks, 3))
            print(f"{delta} {name} phase {phase}: {per_phase[-1]:.3f} ({blocks} blocks)", file=sys.stderr, flush=True)
        row[name] = per_phase
    result["deltas"][delta] = row
print(json.dumps(result))
if args.out:
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
