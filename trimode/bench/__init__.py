"""Benchmarks: each prints a table and ends with one JSON line (see ``trimode bench --help``)."""

from __future__ import annotations

import importlib

# Benchmark name -> module (in this package) whose ``main(argv)`` runs it.
BENCHMARKS = {
    "suite": "suite",
    "ar-vs-transformers": "ar_vs_transformers",
    "modes": "modes",
    "train-tiny": "train_tiny",
    "serve-load": "serve_load",
    "forward-curve": "forward_curve",
    "draft-curve": "draft_curve",
    "lm-eval": "lm_eval",
    "serve-faults": "serve_faults",
}


def run_benchmark(name: str, argv: list[str]) -> int:
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; expected one of {', '.join(BENCHMARKS)}")
    return importlib.import_module(f".{BENCHMARKS[name]}", __name__).main(argv)


def add_arguments(p) -> None:
    p.add_argument("name", choices=tuple(BENCHMARKS), help="which benchmark (default: suite)")
    p.add_argument("rest", nargs="...", help="arguments for the benchmark (see --help after the name)")


def run(args) -> int:
    return run_benchmark(args.name, args.rest)
