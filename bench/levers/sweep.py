"""Short runs of the drafting-adapter objective, one lever at a time (see docs/default_model.md).

Each run trains from the same start for a fixed wall-clock budget and logs held-out draft metrics;
the summary line per run is written to bench/results/adapter_levers.<machine>.json.
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
FAST = ["--draft-loss", "all", "--adapter-top-layers", "8", "--train-mask-embedding", "no", "--distill-topk", "32"]
RUNS = {
    "old-objective": DISTILL + ["--draft-loss", "prefix"],
    "all-slots": DISTILL + ["--draft-loss", "all"],
    "all-slots+top8": DISTILL + FAST,
    "all-slots+top8+masks-scope": DISTILL + FAST + ["--adapter-scope", "masks"],
    "top4+masks": DISTILL + FAST[:-4] + ["--train-mask-embedding", "no", "--distill-topk", "32"] + ["--adapter-scope", "masks"],
    "top15+masks": DISTILL + ["--draft-loss", "all", "--adapter-top-layers", "15", "--train-mask-embedding", "no", "--distill-topk", "32", "--adapter-scope", "masks"],
    "stdlib-text+top8+masks": ["--data", f"{STDLIB}/json", "--data", f"{STDLIB}/email", "--data", f"{STDLIB}/collections"] + FAST + ["--adapter-scope", "masks"],
    "store-epoch2+top8+masks": ["--data", str(ROOT / "small")] + FAST + ["--adapter-scope", "masks", "--teacher-store-mb", "4000"],
}
# Longer runs (6 min) of the candidates, after the 150 s screen.
# Longer runs (about 6 training minutes) of the candidates, after the 150 s screen.
RUNS["6min:old-objective"] = DISTILL + ["--draft-loss", "prefix", "--max-steps", "9"]
RUNS["6min:top15+masks+all-slots"] = RUNS["top15+masks"] + ["--max-steps", "27"]
RUNS["6min:all-layers+masks+all-slots"] = DISTILL + ["--draft-loss", "all", "--train-mask-embedding", "no", "--distill-topk", "32",
                                                     "--adapter-scope", "masks", "--max-steps", "21"]
RUNS["6min:stdlib-text+top15+masks+all-slots"] = ["--data", f"{STDLIB}/json", "--data", f"{STDLIB}/email", "--data", f"{STDLIB}/collections",
    "--draft-loss", "all", "--adapter-top-layers", "15", "--train-mask-embedding", "no", "--distill-topk", "32",
    "--adapter-scope", "masks", "--max-steps", "24"]
RUNS["top4+masks"] = DISTILL + ["--draft-loss", "all", "--adapter-top-layers", "4", "--train-mask-embedding", "no", "--distill-topk", "32", "--adapter-scope", "masks"]

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
