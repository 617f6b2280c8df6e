"""Load benchmark of the serving engine: closed-loop clients at several concurrencies, per mode.

Each of C clients sends requests back to back (greedy, ``--new-tokens`` each, prompts cycling
through a fixed list) to the same :class:`~trimode.engine.Engine` that ``trimode serve`` runs,
in-process (HTTP and JSON costs are not included). Reported per (mode, concurrency): aggregate
generated tokens/s over the wall time, p50/p99 request latency, tokens per forward (per request,
averaged), and whether every output equals the same request served alone (the concurrency-1 run
of that mode; for ``auto`` and the self-speculation modes, the AR run, since they are lossless).

Counting: generated tokens exclude the prompt, include EOS; nfe counts every forward a request
took part in, its prefill included.
"""

from __future__ import annotations

import argparse
import queue
import statistics
import sys
import threading
import time

from tqdm import tqdm

from ..cli_common import add_model_args, load_from_args
from ..decoding import GenerationConfig
from ..decoding.spec import ENGINE_MODES, SPECS, spec_for
from ..engine import Engine, Request
from ..model.defaults import FALLBACK_MASK_TOKEN
from ..runinfo import machine_info, write_result
from .modes import DEFAULT_PROMPTS

PROMPTS = DEFAULT_PROMPTS + [
    "Once upon a time, in a small village by the sea,",
    "The three laws of thermodynamics state that",
    "import numpy as np\n\ndef normalize(x):",
    "Write a short poem about autumn leaves.",
    "The capital of France is",
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def run_level(engine, prompts, mode: str, concurrency: int, requests: int, new_tokens: int, block: dict, eos):

    work = queue.SimpleQueue()
    for i in range(requests):
        work.put(i)
    outputs: dict[int, list[int]] = {}
    latencies, tpf = [], []
    lock = threading.Lock()
    progress = tqdm(total=requests, desc=f"{mode} c={concurrency}", leave=False)

    def client():
        while True:
            try:
                i = work.get_nowait()
            except queue.Empty:
                return
            inbox = queue.SimpleQueue()
            config = GenerationConfig(max_new_tokens=new_tokens, eos_token_ids=eos, block_size=block[mode],
                                      draft_threshold=0.0, threshold=0.9)
            start = time.perf_counter()
            engine.submit(Request(prompts[i % len(prompts)], config, mode, inbox.put))
            tokens = []
            while (event := inbox.get()).kind == "tokens":
                tokens += event.tokens
            if event.kind == "error":
                raise RuntimeError(event.message)
            with lock:
                latencies.append(time.perf_counter() - start)
                outputs[i] = tokens
                tpf.append(event.usage["tokens_per_forward"])
                progress.update()

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    progress.close()
    tokens = sum(len(o) for o in outputs.values())
    return {
        "mode": mode, "concurrency": concurrency, "requests": len(outputs), "generated_tokens": tokens,
        "wall_s": round(wall, 3), "tokens_per_second": round(tokens / wall, 2),
        "latency_p50_s": round(percentile(latencies, 50), 3), "latency_p99_s": round(percentile(latencies, 99), 3),
        "mean_tokens_per_forward": round(statistics.mean(tpf), 3),
    }, outputs


def run(args: argparse.Namespace) -> dict:
    loaded = load_from_args(args, default_mask_token=FALLBACK_MASK_TOKEN)
    path = loaded.source
    prompts = [loaded.tokenizer.encode(p) for p in PROMPTS]
    engine = Engine(loaded.model, max_batch=max(args.concurrency), max_waiting=10_000, spec_max_rows=args.spec_max_rows)
    block = {m: spec_for(m, engine=True).block(args.quadratic_block if m == "quadratic-spec" else args.block_size,
                                               args.device) for m in args.modes}
    rows, alone = [], {}
    try:
        # Concurrency outside, modes inside: on a machine whose speed drifts (shared), the modes
        # compared at one concurrency are measured close together in time.
        for c in args.concurrency:
            for mode in args.modes:
                n = max(args.requests_per_client * c, len(prompts) if c == 1 else 0)
                row, outputs = run_level(engine, prompts, mode, c, n, args.new_tokens, block, loaded.eos_token_ids)
                key = "ar" if SPECS[mode].lossless else mode
                if c == 1 and key == mode:
                    alone[key] = {i % len(prompts): o for i, o in outputs.items()}
                ref = alone.get(key)
                row["equals_alone"] = None if ref is None else sum(
                    o == ref.get(i % len(prompts)) for i, o in outputs.items()) / len(outputs)
                rows.append(row)
                print(f"{mode:<15} c={c:<3} {row['tokens_per_second']:>8.1f} tok/s  p50 {row['latency_p50_s']:.2f}s  "
                      f"p99 {row['latency_p99_s']:.2f}s  tpf {row['mean_tokens_per_forward']:.2f}  "
                      f"= alone {row['equals_alone']}", file=sys.stderr)
    finally:
        engine.close()
    return {
        "benchmark": "serve-load", "model": str(path), "dtype": args.dtype, "new_tokens": args.new_tokens,
        "device": args.device, "block_size": block, "spec_max_rows": args.spec_max_rows,
        "counting": "generated tokens exclude the prompt, include EOS; nfe includes the prefill; greedy; in-process engine",
        "results": rows, "machine": machine_info(),
        "command": "trimode bench serve-load " + " ".join(sys.argv[3:]),
    }


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="trimode bench serve-load", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--modes", nargs="+", choices=ENGINE_MODES, default=list(ENGINE_MODES))
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--requests-per-client", type=int, default=2)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--block-size", type=int, help="block of every mode but quadratic-spec (default: per device)")
    p.add_argument("--quadratic-block", type=int, help="quadratic-spec block (default: per device)")
    p.add_argument("--spec-max-rows", type=int, default=2)
    p.add_argument("--out")
    args = p.parse_args(argv)
    if 1 not in args.concurrency:
        args.concurrency = [1, *args.concurrency]  # the alone reference
    args.concurrency = sorted(set(args.concurrency))
    if "ar" in args.modes:  # the reference of the lossless modes is measured first
        args.modes = ["ar", *[m for m in args.modes if m != "ar"]]
    result = run(args)
    print(f"{'mode':<15} {'conc':>4} {'tok/s':>8} {'p50 s':>7} {'p99 s':>7} {'tok/fwd':>8} {'=alone':>7}")
    for r in result["results"]:
        eq = "" if r["equals_alone"] is None else f"{r['equals_alone']:.2f}"
        print(f"{r['mode']:<15} {r['concurrency']:>4} {r['tokens_per_second']:>8.1f} {r['latency_p50_s']:>7.2f} "
              f"{r['latency_p99_s']:>7.2f} {r['mean_tokens_per_forward']:>8.2f} {eq:>7}")
    write_result(result, args.out)
    return 0
