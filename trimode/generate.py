"""``trimode generate``: one mode, a batch of prompts, text (or ids) out, statistics to stderr."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .cli_common import (
    COUNTING,
    TextPrinter,
    UsageError,
    add_model_args,
    load_from_args,
    threshold_arg,
)
from .decoding import (
    MODES,
    GenerationConfig,
    GenerationResult,
    decoder_for,
    spec_for,
    thresholds,
)
from .decoding.stop import StopStrings
from .decoding.thinking import ThinkingBudget
from .sampling import SamplingParams


def prompt_ids_arg(value: str) -> list[int]:
    try:
        ids = [int(x) for x in value.replace(" ", "").split(",") if x != ""]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--prompt-ids must be comma-separated integers like 5,17,3, got {value!r}") from None
    if not ids:
        raise argparse.ArgumentTypeError("--prompt-ids is empty")
    return ids


def add_arguments(g: argparse.ArgumentParser) -> None:
    add_model_args(g)
    g.add_argument("--mode", choices=MODES, default="ar")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", action="append", help="prompt text (repeat for a batch)")
    src.add_argument("--prompt-ids", type=prompt_ids_arg, action="append", help="prompt token ids, e.g. 5,17,3 (repeatable)")
    g.add_argument("--chat", action="store_true", help="wrap the prompt in the checkpoint's chat template")
    g.add_argument("--system", help="system message (with --chat)")
    g.add_argument("--max-new-tokens", type=int, default=128)
    g.add_argument("--block-size", type=int, default=None, help="diffusion/speculation block (default: the mode's block for the device)")
    g.add_argument("--threshold", type=threshold_arg, default=...,
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
    g.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")
    g.add_argument("--no-stream", action="store_true", help="print the text at the end, not as it is decoded")


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


def run(args: argparse.Namespace) -> int:
    if args.max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    try:
        sampling = SamplingParams(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed)
        block = spec_for(args.mode).block(args.block_size, args.device)
    except ValueError as err:
        raise UsageError(str(err)) from None
    loaded = load_from_args(args, adapter=not args.no_adapter, verbose=True)
    prompts = _prompts(args, loaded)
    context = loaded.config.max_position_embeddings
    for i, p in enumerate(prompts):
        if len(p) + args.max_new_tokens > context:
            raise UsageError(f"prompt {i} has {len(p)} tokens and --max-new-tokens is {args.max_new_tokens}: "
                             f"{len(p) + args.max_new_tokens} exceeds the model's context of {context} tokens")
    stop = None
    if args.stop:
        if loaded.tokenizer is None:
            raise UsageError("--stop needs a tokenizer; this checkpoint has none")
        stop = StopStrings(loaded.tokenizer, args.stop)
    force = None
    if args.thinking_budget is not None:
        if loaded.tokenizer is None:
            raise UsageError("--thinking-budget needs a tokenizer with a </think> token; this checkpoint has none")
        force = ThinkingBudget.from_tokenizer(loaded.tokenizer, prompts, args.thinking_budget)
    try:
        config = GenerationConfig(
            max_new_tokens=args.max_new_tokens,
            sampling=sampling,
            eos_token_ids=loaded.eos_token_ids,
            stop=stop,
            force=force,
            block_size=block,
            max_steps=args.max_steps,
            causal_context=not args.bidirectional_context,
            use_adapter=not args.no_adapter,
            acceptance=args.acceptance,
            **thresholds(args.threshold),
        )
    except ValueError as err:
        raise UsageError(str(err)) from None
    decoder = decoder_for(args.mode, loaded.model)
    # One prompt with text streams as it is decoded; a batch, ids or --json print at the end.
    streaming = not (args.json or args.no_stream) and loaded.tokenizer is not None and len(prompts) == 1
    printer = TextPrinter(loaded.tokenizer, stops=args.stop) if streaming else None
    result = decoder.generate(prompts, config, on_tokens=printer)
    texts = _texts(result, loaded.tokenizer, stop)
    if args.json:
        print(json.dumps(_report(args, loaded, prompts, result, texts)))
    else:
        if printer is not None:
            printer.finish()
            print()
        for i, text in enumerate([] if printer is not None else texts):
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


