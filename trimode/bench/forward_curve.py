"""Forward time against tokens in the forward, and the block size it implies per device.

A self-speculation cycle costs a draft forward and a verify forward over B tokens and yields the
accepted draft tokens plus one. On a GPU at batch 1 a forward over 32 tokens costs about as much
as over 1 (weights are read once either way); on a small CPU the matmuls become compute-bound
after a few tokens, so long blocks cost real time. This benchmark measures t(T), the wall time of
one forward of T new tokens over a cached prefix (bidirectional over the block, the cache read
only: the shape of a draft or a verify), and reports, for per-token acceptance rates alpha,

    speed-up(B) = (1 + alpha + ... + alpha^(B-1)) * t(1) / (2 * t(B))

the ideal linear self-speculation speed-up over AR with block B (B-1 draft slots accepted in a
geometric run, draft and verify both of width B). The block maximising it is the block to use on
that device for a drafter of that quality.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from tqdm import tqdm

from ..cli_common import add_model_args, load_from_args
from ..model.kernels import KERNELS, resolve
from ..runinfo import machine_info, write_result

TOKENS = (1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64)
ALPHAS = (0.5, 0.7, 0.8, 0.9, 0.95)


def ideal_speedup(curve: dict[int, float], block: int, alpha: float) -> float:
    """Linear self-speculation speed-up over AR for block ``block`` (see the module docstring)."""
    expected = sum(alpha**i for i in range(block))
    return expected * curve[1] / (2 * curve[block])


def best_blocks(curve: dict[int, float], alphas=ALPHAS) -> dict[float, int]:
    candidates = [b for b in curve if b >= 2]
    return {a: max(candidates, key=lambda b: ideal_speedup(curve, b, a)) for a in alphas}


def measure(model, tokens=TOKENS, context: int = 128, repeats: int = 7) -> dict[int, float]:
    """Median seconds of one forward of T tokens over a ``context``-token cache, for each T."""
    return {t: statistics.median(times) for t, times in _times(model, tokens, context, repeats).items()}


def _times(model, tokens, context: int, repeats: int) -> dict[int, list[float]]:
    from ..cache import KVCache

    device = next(model.parameters()).device
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(0)
    prefix = torch.randint(0, vocab, (1, context), generator=gen).to(device)
    cache = KVCache.for_model(model, 1, context + max(tokens))
    times: dict[int, list[float]] = {}
    with torch.inference_mode():
        model(prefix, cache=cache, logits_at="last")
        cache.advance(context)
        for t in tokens:
            block = torch.randint(0, vocab, (1, t), generator=gen).to(device)
            times[t] = []
            for i in range(repeats + 2):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                model(block, cache=cache, pattern="bidirectional")
                if device.type == "cuda":
                    torch.cuda.synchronize()
                if i >= 2:  # warm-up forwards are excluded
                    times[t].append(time.perf_counter() - start)
    return times


def measure_kernels(model, kernels: list[str], tokens=TOKENS, context: int = 128, repeats: int = 7,
                    rounds: int = 3) -> dict[str, dict[int, float]]:
    """:func:`measure` for each matmul kernel, the kernels taking turns over ``rounds`` rounds (so
    that drift of a shared machine hits all of them alike); medians over all rounds."""
    times: dict[str, dict[int, list[float]]] = {k: {t: [] for t in tokens} for k in kernels}
    for _ in tqdm(range(rounds), desc="rounds", disable=len(kernels) == 1 and rounds == 1):
        for kernel in kernels:
            if model.kernel != kernel:  # one kernel alone (the usual run) is packed once, at load
                model.pack_weights(kernel)
            for t, ts in _times(model, tokens, context, repeats).items():
                times[kernel][t] += ts
    return {k: {t: statistics.median(ts) for t, ts in per.items()} for k, per in times.items()}


def _summary(curve: dict[int, float], alphas) -> dict:
    rows = [{"tokens": t, "ms": round(s * 1e3, 3), "relative_to_1": round(s / curve[1], 3),
             "ms_per_token": round(s * 1e3 / t, 3)} for t, s in curve.items()]
    speedups = {str(a): {str(b): round(ideal_speedup(curve, b, a), 3) for b in curve if b >= 2} for a in alphas}
    best = {str(a): b for a, b in best_blocks(curve, alphas).items()}
    return {"curve": rows, "ideal_linear_spec_speedup": speedups, "best_block_by_alpha": best}


def run(args: argparse.Namespace) -> dict:
    loaded = load_from_args(args)
    kernels = [resolve(k) for k in (args.kernels or [loaded.model.kernel])]
    if args.device != "cpu" or args.dtype != "float32":
        kernels = [loaded.model.kernel]  # the kernels are CPU float32 paths
    curves = measure_kernels(loaded.model, kernels, tuple(args.tokens), args.context, args.repeats, args.rounds)
    result = {
        "benchmark": "forward-curve",
        "model": str(loaded.source),
        "dtype": args.dtype,
        "device": args.device,
        "context_tokens": args.context,
        "repeats": args.repeats,
        "rounds": args.rounds,
        "timing": "median wall time of one forward (bidirectional block over a read-only cache), warm-ups "
                  "excluded; with several kernels, they take turns round by round",
        "kernel": kernels[0],
        **_summary(curves[kernels[0]], args.alphas),
        "machine": machine_info(),
    }
    if len(kernels) > 1:
        result["kernels"] = {k: _summary(c, args.alphas) for k, c in curves.items()}
    return result


def print_table(result: dict) -> None:
    for kernel, summary in (result.get("kernels") or {result["kernel"]: result}).items():
        print(f"kernel: {kernel}")
        _print_summary(summary)
        print()


def _print_summary(result: dict) -> None:
    print(f"{'tokens':>6} {'ms':>9} {'x t(1)':>7} {'ms/token':>9}")
    for r in result["curve"]:
        print(f"{r['tokens']:>6} {r['ms']:>9.2f} {r['relative_to_1']:>7.2f} {r['ms_per_token']:>9.2f}")
    print("\nideal linear-spec speed-up over AR by block (rows: per-token acceptance alpha)")
    blocks = [r["tokens"] for r in result["curve"] if r["tokens"] >= 2]
    print("alpha " + "".join(f"{b:>7}" for b in blocks) + "   best")
    for a, row in result["ideal_linear_spec_speedup"].items():
        print(f"{a:>5} " + "".join(f"{row[str(b)]:>7.2f}" for b in blocks) + f"   {result['best_block_by_alpha'][a]:>4}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="trimode bench forward-curve", description=__doc__.split("\n\n")[0])
    add_model_args(p)
    p.add_argument("--tokens", type=int, nargs="+", default=list(TOKENS))
    p.add_argument("--context", type=int, default=128, help="cached prefix length")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--alphas", type=float, nargs="+", default=list(ALPHAS))
    p.add_argument("--kernels", nargs="+", choices=KERNELS,
                   help="measure these CPU matmul kernels in turn (e.g. onednn trimode: before and after)")
    p.add_argument("--rounds", type=int, default=1, help="rounds of taking turns (with --kernels)")
    p.add_argument("--out", help="also write the JSON result here")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error(f"--rounds must be >= 1, got {args.rounds}")
    if 1 not in args.tokens:
        p.error("--tokens must include 1 (the AR step everything is compared with)")
    result = run(args)
    result["command"] = " ".join(["trimode bench forward-curve", *(argv if argv is not None else sys.argv[3:])])
    print_table(result)
    write_result(result, args.out)
    return 0
