"""Command line: ``trimode generate | infill | revise | demo | serve | bench | eval | train | export | distill-data | make-prompts | info``.

A dispatch table: each command is a module's ``add_arguments(parser)`` and ``run(args)``; nothing
imports this module.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .bench import BENCHMARKS
from .cli_common import UsageError

# command -> (module, arguments function, run function, help)
COMMANDS = {
    "generate": ("trimode.generate", "add_arguments", "run", "generate text in one of the four modes"),
    "infill": ("trimode.infill", "add_arguments", "run", "fill the middle between a prefix and a suffix by denoising"),
    "revise": ("trimode.revise", "add_arguments", "run", "re-mask the least sure tokens of a text and denoise them again"),
    "demo": ("trimode.demo", "add_arguments", "run", "the default model in every mode, streamed, then a table"),
    "serve": ("trimode.server.cli", "add_arguments", "run", "OpenAI-compatible server: completions, chat, logprobs, Prometheus metrics"),
    "bench": ("trimode.bench", "add_arguments", "run",
              "benchmarks (prints a table and a JSON line); without a name: the suite"),
    "eval": ("trimode.eval.cli", "add_arguments", "run", "accuracy per mode: HumanEval pass@1, GSM8K exact match"),
    "train": ("trimode.train.cli", "add_train_arguments", "run_train",
              "train: joint AR + diffusion, drafting adapter, or AR only"),
    "export": ("trimode.train.cli", "add_export_arguments", "run_export",
               "write a model in the Nemotron-Labs-Diffusion HF layout"),
    "distill-data": ("trimode.train.distill", "add_arguments", "run",
                     "write a JSONL of a model's own answers to prompts"),
    "make-prompts": ("trimode.train.recipe_prompts", "add_arguments", "run",
                     "write distillation prompts built on this machine (never eval prompts)"),
    "info": ("trimode.info", "add_arguments", "run", "describe a checkpoint"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trimode", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, add, _, help_text) in COMMANDS.items():
        getattr(importlib.import_module(module), add)(sub.add_parser(name, help=help_text))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"] and (len(argv) == 1 or argv[1] not in BENCHMARKS):
        argv.insert(1, "suite")  # `trimode bench --quick` runs the suite
    args = build_parser().parse_args(argv)
    module, _, run, _ = COMMANDS[args.command]
    try:
        return getattr(importlib.import_module(module), run)(args)
    except (UsageError, FileNotFoundError, ValueError) as err:
        print(f"trimode: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
