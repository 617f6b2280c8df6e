"""Short runs of the drafting-adapter objective, one lever at a time (docs/default_model.md, "Levers").

    python bench/levers/sweep.py [BUDGET_S] [RUN,RUN,...] [EVAL_EVERY]

Data: runs/lev/train (distilled answers, shards 001-006 of recipes/default_model.sh), runs/lev/eval
(shard 000, held out), runs/lev/small (shard 001 alone: several epochs within the budget). Each run
trains from the same start within a wall-clock budget (or its --max-steps) and logs held-out draft
metrics; its summary replaces its entry in bench/results/adapter_levers.cpu-2core-epyc.json.
"""
import json, subprocess, sys, time
from pathlib import Path

BUDGET = int(sys.argv[1]) if len(sys.argv) > 1 else 150
ONLY = sys.argv[2].split(",") if len(sys.argv) > 2 else None
ROOT = Path("runs/lev")
EVAL_EVERY = sys.argv[3] if len(sys.argv) > 3 else "3"
BASE = subprocess.check_output([sys.executable, "-c", "from trimode.model.defaults import smollm2_gguf_path; print(smollm2_gguf_path())"], text=True).strip()
STDLIB = subprocess.check_output([sys.executable, "-c", "import sysconfig; print(sysconfig.get_paths()['stdlib'])"], text=True).strip()
ALL7 = "self_attn.q_proj,self_attn.k_proj,self_attn.v_proj,self_attn.o_proj,mlp.gate_proj,mlp.up_proj,mlp.down_proj"
COMMON = ["--model", BASE, "--objective", "adapter", "--mask-token", "<empty_output>", "--adapter-rank", "32",
          "--adapter-alpha", "64", "--adapter-targets", ALL7, "--block-size", "8", "--seq-len", "256",
          "--batch-size", "8", "--max-steps", "1000", "--lr", "1e-3", "--schedule", "constant", "--eval-data", str(ROOT / "eval"),
          "--eval-every", EVAL_EVERY, "--eval-rows", "16", "--no-progress"]
DISTILL = ["--data", str(ROOT / "train")]
FAST = ["--draft-loss", "all", "--train-mask-embedding", "no", "--distill-topk", "32"]
STDLIB_TEXT = ["--data", f"{STDLIB}/json", "--data", f"{STDLIB}/email", "--data", f"{STDLIB}/collections"]
# name -> extra arguments. The 150 s screen, then about 6 training minutes for the candidates
# (run: python bench/levers/sweep.py 600 "6min:..." 3).
RUNS = {
    "old-objective": DISTILL + ["--draft-loss", "prefix"],
    "all-slots": DISTILL + ["--draft-loss", "all"],
    "all-slots+top8": DISTILL + FAST + ["--adapter-top-layers", "8"],
    "all-slots+top8+masks-scope": DISTILL + FAST + ["--adapter-top-layers", "8", "--adapter-scope", "masks"],
    "top4+masks": DISTILL + FAST + ["--adapter-top-layers", "4", "--adapter-scope", "masks"],
    "top15+masks": DISTILL + FAST + ["--adapter-top-layers", "15", "--adapter-scope", "masks"],
    "stdlib-text+top8+masks": STDLIB_TEXT + FAST + ["--adapter-top-layers", "8", "--adapter-scope", "masks"],
    "store-epoch2+top8+masks": ["--data", str(ROOT / "small")] + FAST + ["--adapter-top-layers", "8", "--adapter-scope", "masks",
                                                                        "--teacher-store-mb", "4000"],
    "6min:old-objective": DISTILL + ["--draft-loss", "prefix", "--max-steps", "9"],
    "6min:top15+masks+all-slots": DISTILL + FAST + ["--adapter-top-layers", "15", "--adapter-scope", "masks", "--max-steps", "27"],
    "6min:all-layers+masks+all-slots": DISTILL + FAST + ["--adapter-scope", "masks", "--max-steps", "21"],
    "6min:stdlib-text+top15+masks+all-slots": STDLIB_TEXT + FAST + ["--adapter-top-layers", "15", "--adapter-scope", "masks",
                                                                    "--max-steps", "24"],
}

results = []
out_file = Path("bench/results/adapter_levers.cpu-2core-epyc.json")
for name, extra in RUNS.items():
    if ONLY and name not in ONLY:
        continue
    out = ROOT / "runs" / name
    subprocess.run(["rm", "-rf", str(out)])
    t0 = time.time()
    subprocess.run(["timeout", str(BUDGET), "trimode", "train", *COMMON, *extra, "--output", str(out)],
                   stdout=open(str(out) + ".log", "w"), stderr=subprocess.STDOUT)
    metrics = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()] if (out / "metrics.jsonl").exists() else []
    evals = [json.loads(l) for l in (out / "eval.jsonl").read_text().splitlines()] if (out / "eval.jsonl").exists() else []
    steady = metrics[1:] or metrics
    rec = {"run": name, "args": extra, "wall_s": round(time.time() - t0, 1), "steps": len(metrics),
           "tokens_per_s": round(sum(m["tokens"] for m in steady) / max(sum(m["step_s"] for m in steady), 1e-9), 1),
           "supervised_slots_per_step": round(sum(m["draft_weight"] for m in steady) / max(len(steady), 1), 1),
           "eligible_slots_per_step": round(sum(m["draft_eligible"] for m in steady) / max(len(steady), 1), 1),
           "curve": [{"train_min": round(e["train_s"] / 60, 2), "accepted_per_block": round(e.get("accepted_per_block", 0), 4),
                      "draft_accuracy": round(e.get("draft_accuracy", 0), 4),
                      "slot_accuracy": [round(a, 3) for a in e.get("slot_accuracy", [])]} for e in evals]}
    if name.startswith("store"):
        later = [m for m in metrics if m["epoch"] >= 1]
        first = [m for m in metrics[1:] if m["epoch"] == 0]
        rec["tokens_per_s_epoch0"] = round(sum(m["tokens"] for m in first) / max(sum(m["step_s"] for m in first), 1e-9), 1)
        rec["tokens_per_s_later_epochs"] = round(sum(m["tokens"] for m in later) / max(sum(m["step_s"] for m in later), 1e-9), 1)
    print(json.dumps(rec), flush=True)
    results.append(rec)
    prev = json.loads(out_file.read_text()) if out_file.exists() else {"runs": []}
    prev["runs"] = [r for r in prev["runs"] if r["run"] != name] + [rec]
    out_file.write_text(json.dumps(prev, indent=1) + "\n")
