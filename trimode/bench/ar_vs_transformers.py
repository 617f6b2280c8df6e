"""Our AR decoding against transformers' ``generate`` on SmolLM2-135M-Instruct, batch 1, same machine,
same weights, same run.

Both sides get identical weights (transformers' ``LlamaForCausalLM`` is built from the tensors we
dequantized), the same prompt and exactly ``--new-tokens`` greedy tokens (EOS disabled on both).
Timings cover the whole call (prefill included); runs alternate between the two so that machine
drift hits both; the median over ``--repeats`` is reported. Token agreement is reported too: it must
be exact in float32; in bfloat16 our CPU attention runs in float32 (see trimode.cache), so the two
can part ways after a near-tie.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from ..cli_common import add_model_args, load_from_args
from ..decoding import ARDecoder, GenerationConfig
from ..model.weights import internal_to_hf
from ..runinfo import machine_info, write_result

DEFAULT_PROMPT = "The history of the Roman Empire"


def _ours(model, prompt_ids: list[int], n: int) -> tuple[list[int], float]:
    result = ARDecoder(model).generate([prompt_ids], GenerationConfig(max_new_tokens=n))
    return result.sequences[0], result.stats.elapsed_s


def _theirs(model, prompt_ids: list[int], n: int) -> tuple[list[int], float]:
    ids = torch.tensor([prompt_ids], device=model.device)
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n, do_sample=False,
            eos_token_id=None, pad_token_id=0,
        )
    return out[0, len(prompt_ids) :].tolist(), time.perf_counter() - start


def _hf_model(loaded, dtype: torch.dtype):
    import transformers  # the baseline, an optional dependency (the 'test' extra)

    cfg = loaded.config
    hf_cfg = transformers.LlamaConfig.from_dict(cfg.to_hf())
    hf_cfg._attn_implementation = "sdpa"
    model = transformers.LlamaForCausalLM(hf_cfg)
    state = internal_to_hf(loaded.model.state_dict(), cfg)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [m for m in missing if m != "lm_head.weight"]:
        raise RuntimeError(f"weights did not map onto transformers: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    return model.to(dtype=dtype, device=next(loaded.model.parameters()).device).eval()


def run(args: argparse.Namespace) -> dict:
    rows, path = [], None
    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        loaded = load_from_args(argparse.Namespace(**{**vars(args), "dtype": dtype_name}))
        path = loaded.source
        prompt = loaded.tokenizer.encode(args.prompt)
        hf = _hf_model(loaded, dtype)
        _ours(loaded.model, prompt, 8)  # warm-up: allocator, kernels
        _theirs(hf, prompt, 8)
        ours_t, theirs_t = [], []
        ours_tok = theirs_tok = None
        for _ in range(args.repeats):
            ours_tok, t = _ours(loaded.model, prompt, args.new_tokens)
            ours_t.append(t)
            theirs_tok, t = _theirs(hf, prompt, args.new_tokens)
            theirs_t.append(t)
        agree = next((i for i, (a, b) in enumerate(zip(ours_tok, theirs_tok)) if a != b), len(ours_tok))
        ours_tps = args.new_tokens / statistics.median(ours_t)
        theirs_tps = args.new_tokens / statistics.median(theirs_t)
        rows.append({
            "dtype": dtype_name,
            "trimode_tok_s": round(ours_tps, 2),
            "transformers_tok_s": round(theirs_tps, 2),
            "speedup": round(ours_tps / theirs_tps, 3),
            "identical_tokens": ours_tok == theirs_tok,
            "first_difference_at": None if ours_tok == theirs_tok else agree,
            "trimode_s": [round(t, 3) for t in ours_t],
            "transformers_s": [round(t, 3) for t in theirs_t],
        })
        del hf, loaded
    return {
        "benchmark": "ar-vs-transformers",
        "model": str(path),
        "prompt": args.prompt,
        "prompt_tokens": len(prompt),
        "new_tokens": args.new_tokens,
        "batch": 1,
        "repeats": args.repeats,
        "timing": "median wall time of the whole call (prefill + decode), runs alternated",
        "results": rows,
        "machine": machine_info(),
        "command": "trimode bench ar-vs-transformers " + " ".join(sys.argv[3:] if len(sys.argv) > 3 else []),
    }


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="trimode bench ar-vs-transformers", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"],
                   help="the dtypes to compare in (--dtype is not used)")
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--prompt", default=DEFAULT_PROMPT)
    p.add_argument("--out", help="also write the JSON result to this file (e.g. bench/results/....json)")
    args = p.parse_args(argv)
    try:
        import transformers  # noqa: F401
    except ImportError:
        print("this benchmark needs transformers: pip install -e '.[test]'", file=sys.stderr)
        return 2
    result = run(args)
    print(f"{'dtype':<10} {'trimode tok/s':>14} {'transformers tok/s':>19} {'speed-up':>9} {'same tokens':>12}")
    for r in result["results"]:
        print(f"{r['dtype']:<10} {r['trimode_tok_s']:>14.2f} {r['transformers_tok_s']:>19.2f} "
              f"{r['speedup']:>8.2f}x {r['identical_tokens']!s:>12}")
    write_result(result, args.out)
    return 0
