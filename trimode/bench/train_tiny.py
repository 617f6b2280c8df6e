"""Does the joint objective buy diffusion decoding without costing AR quality? A tiny model trained
from scratch, twice with the same data, seed and steps: once with the AR loss alone, once with the
joint AR + diffusion objective. Corpora: this machine's Python standard library (real code) or
generated Python functions (fixed syntax around random names and constants).

Reported on held-out files (never trained on): AR loss (mean next-token cross-entropy) of both
models, and the tokens per forward of diffusion decoding (threshold 0.9) and of linear
self-speculation (no adapter) on held-out prompts, with how often they equal greedy AR and how
many generated tokens equal the held-out text's own continuation (fast garbage is not speed). Counting:
generated tokens exclude the prompt and include EOS; nfe counts every forward, the prefill included.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import torch

from ..runinfo import machine_info, write_result

# Packages of the standard library used as corpus; the last files (sorted) of each are held out.
PACKAGES = ("email", "json", "http", "logging", "importlib", "concurrent", "asyncio", "xml", "unittest")


def stdlib_corpus(held_out_every: int) -> tuple[list[str], list[str]]:
    """Real code: this Python's standard library (a few packages); every Nth file held out."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for pkg in PACKAGES for p in (root / pkg).rglob("*.py") if "test" not in p.name)
    held = set(files[held_out_every - 1 :: held_out_every])
    text = [p.read_text(errors="replace") for p in files]
    return [t for p, t in zip(files, text) if p not in held], [t for p, t in zip(files, text) if p in held]


WORDS = ("count", "total", "value", "item", "name", "size", "index", "score", "price", "limit", "offset",
         "width", "height", "speed", "level", "weight", "result", "buffer", "record", "token")
OPS = ("+", "-", "*", "//", "%")


def synthetic_function(rng) -> str:
    """A small generated Python function: fixed syntax (predictable, where parallel decoding can
    commit several tokens at once) around random names and constants (unpredictable)."""
    a, b, c = rng.sample(WORDS, 3)
    k, m = rng.randint(2, 99), rng.randint(2, 9)
    op, op2 = rng.choice(OPS), rng.choice(OPS)
    kind = rng.randrange(3)
    if kind == 0:
        return (f"def get_{a}_{b}({a}, {b}):\n    \"\"\"Return the {a} {op} {b} scaled by {m}.\"\"\"\n"
                f"    {c} = ({a} {op} {b}) * {m}\n    return {c}\n")
    if kind == 1:
        return (f"class {a.title()}{b.title()}:\n    def __init__(self, {a}, {b}={k}):\n"
                f"        self.{a} = {a}\n        self.{b} = {b}\n\n    def {c}(self):\n"
                f"        return self.{a} {op} self.{b} {op2} {m}\n")
    return (f"def sum_{a}(items):\n    {c} = 0\n    for {b} in items:\n        if {b} > {k}:\n"
            f"            {c} += {b} {op} {m}\n    return {c}\n")


def synthetic_corpus(held_out_every: int, documents: int = 6000, seed: int = 0) -> tuple[list[str], list[str]]:
    import random

    rng = random.Random(seed)
    docs = ["\n".join(synthetic_function(rng) for _ in range(4)) for _ in range(documents)]
    held = set(range(held_out_every - 1, documents, held_out_every))
    return [d for i, d in enumerate(docs) if i not in held], [d for i, d in enumerate(docs) if i in held]


CORPORA = {"stdlib": stdlib_corpus, "synthetic-code": synthetic_corpus}


def _train(kind: str, ckpt: Path, data: Path, out: Path, args: argparse.Namespace) -> tuple[list[dict], float]:
    from ..train.config import TrainConfig
    from ..train.objective import ObjectiveConfig
    from ..train.run import train

    cfg = TrainConfig(model=str(ckpt), data=(str(data),), output=str(out), max_steps=args.steps, seq_len=args.seq_len,
                      batch_size=args.batch_size, lr=args.lr, warmup=args.steps // 20, schedule="cosine",
                      seed=args.seed, device=args.device, objective=ObjectiveConfig(kind=kind, block_size=args.block_size))
    start = time.perf_counter()
    records = train(cfg)
    return records, time.perf_counter() - start


def _heldout_loss(model, sequences: torch.Tensor) -> float:
    from ..train.objective import ObjectiveConfig, ar_terms

    cfg = ObjectiveConfig(kind="ar")
    total, count = 0.0, 0
    device = next(model.parameters()).device
    with torch.no_grad():
        for chunk in sequences.to(device).split(16):
            terms = ar_terms(model, chunk, torch.ones_like(chunk, dtype=torch.bool), cfg)
            total, count = total + float(terms.loss), count + terms.count
    return total / count


SETTINGS = (("ar", "ar", None), ("diffusion@0.9", "diffusion", 0.9), ("diffusion@0.7", "diffusion", 0.7),
            ("diffusion@0.5", "diffusion", 0.5), ("linear-spec", "linear-spec", None))


def _decode(model, prompts, references, eos, args) -> dict:
    from ..decoding import GenerationConfig, decoder_for

    out: dict = {}
    ar = None
    for label, mode, threshold in SETTINGS:
        cfg = GenerationConfig(max_new_tokens=args.new_tokens, eos_token_ids=eos, block_size=args.block_size,
                               threshold=threshold if threshold is not None else 0.9, draft_threshold=0.0,
                               use_adapter=False)
        tpf, seqs = [], []
        for p in prompts:
            res = decoder_for(mode, model).generate([p], cfg)
            tpf.append(res.stats.tokens_per_forward)
            seqs.append(res.sequences[0])
        if mode == "ar":
            ar = seqs
        # Quality, so that fast garbage does not pass for speed: the share of generated tokens equal
        # to the held-out text's own continuation at the same position.
        hits = [sum(g == t for g, t in zip(seq, ref)) / max(1, len(seq)) for seq, ref in zip(seqs, references)]
        out[label] = {"tokens_per_forward": statistics.mean(tpf),
                      "equals_ar": sum(a == b for a, b in zip(seqs, ar)) / len(seqs),
                      "reference_match": statistics.mean(hits)}
    return out


def run(args: argparse.Namespace) -> dict:
    from ..model import load
    from ..train.data import DataConfig, build_dataset
    from ..train.scratch import make_scratch_checkpoint

    torch.set_num_threads(args.threads or torch.get_num_threads())
    texts, held_texts = CORPORA[args.corpus](args.held_out_every)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="trimode-train-tiny-"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / "train.txt"
    data.write_text("\n\n".join(texts))
    held = work / "heldout.txt"
    held.write_text("\n\n".join(held_texts))
    base = {"hidden_size": args.hidden, "num_hidden_layers": args.layers, "intermediate_size": 3 * args.hidden,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": args.hidden // 4}
    ckpt = make_scratch_checkpoint(work / "init", texts, vocab_size=args.vocab, block_size=args.block_size,
                                   seed=args.seed, **base)
    results = {}
    for kind in ("ar", "joint"):
        records, wall = _train(kind, ckpt, data, work / kind, args)
        loaded = load(work / kind / "final", pack=False, device=args.device)
        tok = loaded.tokenizer
        heldout = build_dataset(DataConfig(paths=(str(held),), seq_len=args.seq_len), tok).input_ids.long()
        picked = heldout[:: max(1, len(heldout) // args.prompts)][: args.prompts]
        prompts = [seq[: args.prompt_len].tolist() for seq in picked]
        references = [seq[args.prompt_len :].tolist() for seq in picked]
        results[kind] = {
            "train_wall_s": wall, "final_train_loss": records[-1]["loss"],
            "final_train_ar_loss": records[-1].get("ar_loss"),
            "heldout_ar_loss": _heldout_loss(loaded.model, heldout[: args.eval_sequences]),
            "decoding": _decode(loaded.model, prompts, references, loaded.eos_token_ids, args),
            "loss_curve": [round(r["loss"], 4) for r in records[:: max(1, len(records) // 50)]],
        }
    return {
        "benchmark": "train-tiny",
        "machine": machine_info(),
        "settings": {k: v for k, v in vars(args).items() if k not in ("out",)},
        "corpus": {"name": args.corpus, "train_documents": len(texts), "heldout_documents": len(held_texts),
                   **({"packages": PACKAGES} if args.corpus == "stdlib" else {})},
        "parameters": sum(p.numel() for p in load(ckpt, pack=False).model.parameters()),
        "results": results,
        "ar_loss_gap": results["joint"]["heldout_ar_loss"] - results["ar"]["heldout_ar_loss"],
        "counting": "generated tokens exclude the prompt and include EOS; nfe counts every forward incl. prefill",
    }


def print_table(result: dict) -> None:
    labels = [label for label, _, _ in SETTINGS if label != "ar"]
    print(f"{'objective':<10} {'train s':>8} {'heldout AR loss':>16} " + " ".join(f"{x + ' TPF':>18}" for x in labels))
    for kind, r in result["results"].items():
        d = r["decoding"]
        cells = " ".join(f"{d[x]['tokens_per_forward']:.2f} ({d[x]['reference_match']:.2f})".rjust(18) for x in labels)
        print(f"{kind:<10} {r['train_wall_s']:>8.0f} {r['heldout_ar_loss']:>16.4f} {cells}  AR ref-match "
              f"{d['ar']['reference_match']:.2f}")
    print(f"held-out AR loss gap (joint - ar): {result['ar_loss_gap']:+.4f}; (x): share of generated tokens equal "
          "to the held-out continuation", file=sys.stderr)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="trimode bench train-tiny", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", choices=sorted(CORPORA), default="stdlib")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--block-size", type=int, default=8)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--vocab", type=int, default=2048)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--held-out-every", type=int, default=10, help="every Nth corpus file is held out")
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--prompt-len", type=int, default=48)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--eval-sequences", type=int, default=256)
    p.add_argument("--threads", type=int)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (training and decoding)")
    p.add_argument("--workdir", help="keep the checkpoints here (default: a temporary folder)")
    p.add_argument("--out", help="write the JSON result here (e.g. bench/results/train_tiny.<machine>.json)")
    args = p.parse_args(argv)
    result = run(args)
    print_table(result)
    write_result(result, args.out)
    return 0
