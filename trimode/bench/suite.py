"""The benchmark suite (``trimode bench``): every mode over the bundled eval prompts, across block
sizes, thresholds and batch sizes, against transformers' ``generate`` on the same weights.

Counting (the same for every mode, see :mod:`trimode.decoding.base`): generated tokens exclude the
prompt and include EOS; a forward is any model call, the prefill included, and a forward over a
batch counts once, so at batch > 1 tokens per forward sums the rows. Tokens/s is generated tokens
over the wall time of the generate calls (prefill included), the median of ``--repeats`` timed
runs; one warm-up call per setting and batch size runs first and is excluded. transformers runs
greedy ``generate`` with the same EOS ids and token budget on a ``LlamaForCausalLM`` holding our
weights (left-padded batches); its tokens are counted the same way. Accuracy: math answers by their final number, code answers by running their
tests in a subprocess; chat prompts have no reference and count only for speed.

Every setting runs at batch 1; the batch-size sweep runs each mode's default setting. equals_ar
compares a setting's greedy tokens with AR's at batch 1, prompt by prompt.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import torch

from ..cli_common import add_model_args, load_from_args
from ..decoding import MODES, SPECS, decoder_for
from ..eval import prompts as bundled
from ..eval.generation import generate_all, sweep
from ..eval.prompts import BUNDLED
from ..model.defaults import FALLBACK_MASK_TOKEN
from ..runinfo import machine_info

QUICK = {"per_set": 1, "max_new_tokens": 32, "repeats": 1, "block_sizes": [16], "thresholds": [0.5, 0.9],
         "linear_blocks": [8], "quadratic_blocks": [4], "batch_sizes": [1, 3]}
FULL = {"per_set": 4, "max_new_tokens": 96, "repeats": 3, "block_sizes": [16, 32], "thresholds": [0.5, 0.7, 0.9],
        "linear_blocks": [4, 16], "quadratic_blocks": [4, 8], "batch_sizes": [1, 4]}


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    p.add_argument("--quick", action="store_true", help="small preset (< 3 minutes on a 2-core CPU)")
    p.add_argument("--json", action="store_true", help="table to stderr, only the final JSON line to stdout")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--sets", nargs="+", choices=BUNDLED, default=list(BUNDLED), help="bundled prompt sets (eval split)")
    p.add_argument("--per-set", type=int, help="prompts per set (full: 4, quick: 1)")
    p.add_argument("--max-new-tokens", type=int, help="full: 96, quick: 32")
    p.add_argument("--block-sizes", type=int, nargs="+", help="diffusion blocks (full: 16 32)")
    p.add_argument("--thresholds", type=float, nargs="+", help="diffusion thresholds (full: 0.5 0.7 0.9)")
    p.add_argument("--linear-blocks", type=int, nargs="+", help="linear-spec blocks (full: 4 16)")
    p.add_argument("--quadratic-blocks", type=int, nargs="+", help="quadratic-spec blocks (full: 4 8)")
    p.add_argument("--batch-sizes", type=int, nargs="+", help="full: 1 4 (1 is always run)")
    p.add_argument("--repeats", type=int, help="timed runs per setting, the median kept (full: 3, quick: 1)")
    p.add_argument("--no-transformers", action="store_true", help="skip the transformers baseline")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--out", type=Path, help="results file (default: bench/results/suite[.quick].<model>.<device>.json)")


def preset(args: argparse.Namespace) -> dict[str, Any]:
    base = dict(QUICK if args.quick else FULL)
    for key in base:
        if getattr(args, key, None) is not None:
            base[key] = getattr(args, key)
    if min(base["per_set"], base["max_new_tokens"], base["repeats"], *base["batch_sizes"]) < 1:
        raise ValueError(f"--per-set, --max-new-tokens, --repeats and --batch-sizes must be >= 1, got {base}")
    base["batch_sizes"] = sorted(set(base["batch_sizes"]) | {1})
    return base


def run(args: argparse.Namespace, loaded=None) -> dict[str, Any]:
    """The whole suite; ``loaded`` (a :class:`~trimode.model.loading.LoadedModel`) skips loading."""
    cfg = preset(args)
    loaded = loaded or load_from_args(args, default_mask_token=FALLBACK_MASK_TOKEN)
    if loaded.tokenizer is None:
        raise ValueError(f"{loaded.source} has no tokenizer; the suite needs text prompts")
    if any(SPECS[m].needs_mask for m in args.modes) and loaded.config.mask_token_id is None:
        raise ValueError(f"{loaded.source} has no mask token; pass --mask-token for the non-AR modes")
    items = [it for name in args.sets for it in bundled.load(name, "eval")[: cfg["per_set"]]]
    prompts = [it.ids(loaded.tokenizer) for it in items]
    settings = sweep(args.modes, cfg["block_sizes"], cfg["thresholds"], cfg["linear_blocks"], cfg["quadratic_blocks"],
                     args.device)
    defaults = {m: _default_of(m, settings) for m in args.modes}
    rows, reference = [], None
    for batch in cfg["batch_sizes"]:
        for setting in settings:
            if batch > 1 and setting != defaults[setting.mode]:
                continue
            row = _measure(loaded, setting, items, prompts, cfg["max_new_tokens"], batch, cfg["repeats"], reference)
            if setting.mode == "ar" and batch == 1:
                reference = row.pop("_ids")
                row["equals_ar"], row["equals_ar_fraction"] = True, 1.0
            row.pop("_ids", None)
            rows.append(row)
    baseline = [] if args.no_transformers else _transformers(loaded, prompts, cfg["max_new_tokens"],
                                                             cfg["batch_sizes"], cfg["repeats"], reference)
    _speedups(rows, baseline)
    return {
        "benchmark": "suite",
        "preset": "quick" if args.quick else "full",
        "model": str(loaded.source),
        "dtype": args.dtype,
        "device": args.device,
        "mask_token_id": loaded.config.mask_token_id,
        "prompt_sets": {name: [it.id for it in items if it.id.startswith(name + "/")] for name in args.sets},
        "settings": cfg,
        "counting": __doc__.split("\n\n")[1].replace("\n", " "),
        "machine": machine_info(),
        "command": "trimode bench " + " ".join(sys.argv[2:] if len(sys.argv) > 2 else []),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "modes": {m: _headline(rows, defaults[m]) for m in args.modes},
        "results": rows,
        "transformers": baseline,
    }


def _default_of(mode: str, settings):
    """The mode's headline setting: the one nearest its defaults (threshold first, then block)."""
    from ..eval.generation import Setting

    default = Setting.default(mode)
    mine = [s for s in settings if s.mode == mode]
    return min(mine, key=lambda s: (s.threshold != default.threshold, s.block_size != default.block_size))


def _median_run(runs: list, elapsed):
    return sorted(runs, key=elapsed)[len(runs) // 2]


def _measure(loaded, setting, items, prompts, max_new, batch, repeats, reference) -> dict[str, Any]:
    decoder = decoder_for(setting.mode, loaded.model)
    decoder.generate([list(p) for p in prompts[:batch]], setting.config(4, loaded.eos_token_ids))  # warm-up
    runs = [generate_all(decoder, setting, prompts, max_new_tokens=max_new, eos_token_ids=loaded.eos_token_ids,
                         batch_size=batch, tokenizer=loaded.tokenizer, progress=f"bench {setting.label} batch {batch}")
            for _ in range(repeats)]
    run = _median_run(runs, lambda r: r.totals.elapsed_s)  # greedy: only the timings differ between repeats
    per_prompt, graded, totals = [], [], run.totals
    for i, (item, out) in enumerate(zip(items, run.outputs)):
        stats = run.batches[out.batch]
        ok = bundled.grade(item, out.text or "")
        if ok is not None:
            graded.append(ok)
        per_prompt.append({
            "id": item.id, "generated_tokens": len(out.ids), "finish": out.finish, "correct": ok,
            "equals_ar": None if reference is None else out.ids == reference[i],
            # forwards and time are per generate call, i.e. per prompt only at batch 1
            "nfe": stats.nfe if batch == 1 else None,
            "elapsed_s": round(stats.elapsed_s, 4) if batch == 1 else None,
            "text": out.text,
        })
    hist = run.histogram()
    accepted = run.accepted_lengths()
    same = [p["equals_ar"] for p in per_prompt]
    return {
        **setting.to_dict(), "batch_size": batch,
        "generated_tokens": totals.generated_tokens, "nfe": totals.nfe, "elapsed_s": totals.elapsed_s,
        "tokens_per_forward": totals.tokens_per_forward, "tokens_per_second": totals.tokens_per_second,
        "accuracy": sum(graded) / len(graded) if graded else None, "graded": len(graded),
        "equals_ar": None if reference is None else all(same),
        "equals_ar_fraction": None if reference is None else sum(same) / len(same),
        "mean_accepted_length": sum(accepted) / len(accepted) if accepted else None,
        "accepted_length_histogram": hist,
        "per_prompt": per_prompt,
        "_ids": [o.ids for o in run.outputs],
    }


def _transformers(loaded, prompts, max_new, batch_sizes, repeats, reference) -> list[dict[str, Any]]:
    from .ar_vs_transformers import _hf_model

    param = next(loaded.model.parameters())
    hf = _hf_model(loaded, param.dtype).to(param.device)
    eos = list(loaded.eos_token_ids)
    out = []
    for b in batch_sizes:
        runs = [_transformers_at(hf, eos, prompts, max_new, b, reference) for _ in range(repeats)]
        out.append(_median_run(runs, lambda r: r["elapsed_s"]))
    return out


def _transformers_at(hf, eos, prompts, max_new, batch, reference) -> dict[str, Any]:
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    _hf_generate(hf, [prompts[i] for i in order[:batch]], 4, eos)  # warm-up
    outputs: list[list[int]] = [[] for _ in prompts]
    elapsed = 0.0
    for start in range(0, len(order), batch):
        chunk = order[start : start + batch]
        t0 = time.perf_counter()
        seqs = _hf_generate(hf, [prompts[i] for i in chunk], max_new, eos)
        elapsed += time.perf_counter() - t0
        for i, seq in zip(chunk, seqs):
            outputs[i] = seq
    tokens = sum(len(s) for s in outputs)
    same = None if reference is None else [o == r for o, r in zip(outputs, reference)]
    return {
        "batch_size": batch, "generated_tokens": tokens, "elapsed_s": elapsed,
        "tokens_per_second": tokens / elapsed if elapsed > 0 else 0.0,
        "equals_ar": None if same is None else all(same),
        "equals_ar_fraction": None if same is None else sum(same) / len(same),
    }


def _hf_generate(model, prompts: list[list[int]], max_new: int, eos: list[int]) -> list[list[int]]:
    """Greedy, left-padded; each row cut after its first EOS (kept), as our decoders count."""
    width = max(len(p) for p in prompts)
    pad = eos[0] if eos else 0
    ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    device = next(model.parameters()).device
    with torch.inference_mode():
        out = model.generate(ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new,
                             do_sample=False, eos_token_id=eos or None, pad_token_id=pad)
    rows = []
    for row in out[:, width:].tolist():
        cut = next((k + 1 for k, t in enumerate(row) if t in eos), len(row))
        rows.append(row[:cut])
    return rows


def _speedups(rows: list[dict[str, Any]], baseline: list[dict[str, Any]]) -> None:
    ar = {r["batch_size"]: r["tokens_per_second"] for r in rows if r["mode"] == "ar"}
    hf = {b["batch_size"]: b["tokens_per_second"] for b in baseline}
    for r in rows:
        b = r["batch_size"]
        r["speedup_vs_ar"] = r["tokens_per_second"] / ar[b] if ar.get(b) else None
        r["speedup_vs_transformers"] = r["tokens_per_second"] / hf[b] if hf.get(b) else None


def _headline(rows: list[dict[str, Any]], setting) -> dict[str, Any]:
    row = next(r for r in rows if r["label"] == setting.label and r["batch_size"] == 1)
    keys = ("label", "tokens_per_forward", "tokens_per_second", "speedup_vs_ar", "speedup_vs_transformers",
            "equals_ar", "equals_ar_fraction", "accuracy", "mean_accepted_length", "accepted_length_histogram")
    return {k: row[k] for k in keys}


def _r(x, nd=2) -> str:
    return "-" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


def print_table(result: dict[str, Any], file=sys.stdout) -> None:
    print(f"{'setting':<22} {'batch':>5} {'tok/fwd':>8} {'tok/s':>8} {'vs AR':>6} {'vs HF':>6} {'accept':>6} "
          f"{'acc':>5} {'= AR':>5}", file=file)
    for r in result["results"]:
        print(f"{r['label']:<22} {r['batch_size']:>5} {_r(r['tokens_per_forward']):>8} {_r(r['tokens_per_second'], 1):>8} "
              f"{_r(r['speedup_vs_ar']):>6} {_r(r['speedup_vs_transformers']):>6} {_r(r['mean_accepted_length']):>6} "
              f"{_r(r['accuracy']):>5} {_r(r['equals_ar_fraction']):>5}", file=file)
    for b in result["transformers"]:
        print(f"{'transformers generate':<22} {b['batch_size']:>5} {'-':>8} {_r(b['tokens_per_second'], 1):>8} "
              f"{'':>6} {'':>6} {'':>6} {'':>5} {_r(b['equals_ar_fraction']):>5}", file=file)


def default_out(result: dict[str, Any]) -> Path:
    model = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(result["model"]).stem)
    quick = ".quick" if result["preset"] == "quick" else ""
    return Path("bench/results") / f"suite{quick}.{model}.{result['device'].replace(':', '')}.json"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="trimode bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    args = p.parse_args(argv)
    result = run(args)
    out = args.out or default_out(result)
    result["file"] = str(out)
    if not args.no_plots:
        from .plots import plot_suite

        result["plots"] = [str(x) for x in plot_suite(result, out.parent, out.stem)]
    print_table(result, sys.stderr if args.json else sys.stdout)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(summary(result)))
    return 0


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """The final JSON line: per-mode headline figures, the baseline, where the details are."""
    keys = ("benchmark", "preset", "model", "device", "dtype", "file", "plots", "modes")
    out = {k: result[k] for k in keys if k in result}
    out["transformers"] = [{k: b[k] for k in ("batch_size", "tokens_per_second", "equals_ar")} for b in result["transformers"]]
    return out
