"""``trimode distill-data``: a JSONL of a model's own answers to a prompt file.

This is the data a drafting adapter learns from (its target is the verifier's own distribution), or
self-distillation SFT data. Prompts come from a ``.txt`` (one per line, blank lines skipped) or a
``.jsonl`` with ``{"prompt": ...}`` or ``{"messages": [...]}`` per line (a conversation that ends
with an assistant turn has that turn dropped and answered anew). Each output line is

    {"messages": [..., {"role": "assistant", "content": answer}],
     "prompt_tokens": n, "answer_tokens": m, "finish_reason": "eos" | "length" | "stop"}

or, with ``--no-chat`` (prompts encoded as raw text), ``{"prompt": ..., "completion": answer, ...}``.
Pre-tokenized prompts ``{"prompt_ids": [...]}`` (the way to use a checkpoint without a tokenizer)
give ``{"input_ids": prompt + answer ids, "loss_mask": false on the prompt, true on the answer, ...}``.
All load with :func:`trimode.train.data.build_dataset` as SFT data (only answers trained).
``answer_tokens`` counts the generated ids, EOS included; the answer text excludes special tokens.
Row i of the file samples with seed ``--seed + i`` whatever the batch size, and the output is
written to a temporary file renamed into place only when complete.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..cli_common import UsageError, add_model_args, load_from_args
from ..decoding import MODES, GenerationConfig, decoder_for, spec_for
from .data import DataError, validate_messages


@dataclasses.dataclass
class Prompt:
    messages: list[dict[str, Any]] | None  # chat prompts
    text: str | None  # --no-chat prompts
    ids: list[int] | None = None  # pre-tokenized prompts, used verbatim
    where: str = ""  # file:line, for errors

    def encode(self, tokenizer, template_vars: dict[str, Any]) -> list[int]:
        if self.ids is not None:
            return self.ids
        if self.messages is not None:
            return tokenizer.encode_chat(self.messages, **template_vars)
        return tokenizer.encode(self.text)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    p.add_argument("--prompts", required=True, help=".txt (one prompt per line) or .jsonl ('prompt', 'messages' or 'prompt_ids')")
    p.add_argument("--output", required=True, help="JSONL file to write")
    p.add_argument("--mode", choices=MODES, default="ar", help="decoding mode (at T=0 the spec modes equal AR)")
    p.add_argument("--block-size", type=int, default=None, help="diffusion/speculation block (default: the mode's block for the device)")
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--seed", type=int, default=0, help="prompt i samples with seed + i")
    p.add_argument("--batch-size", type=int, default=8, help="prompts decoded together")
    p.add_argument("--system", help="system message added to prompts that have none")
    p.add_argument("--no-chat", action="store_true", help="encode prompts as raw text, without the chat template")
    p.add_argument("--enable-thinking", action="store_true", help="pass enable_thinking=True to the chat template")


def run(args: argparse.Namespace) -> int:
    from ..sampling import SamplingParams

    for name in ("max_new_tokens", "batch_size"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    try:
        sampling = SamplingParams(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed)
        prompts = read_prompts(Path(args.prompts), chat=not args.no_chat, system=args.system)
    except DataError as err:
        raise UsageError(str(err)) from None
    loaded = load_from_args(args)
    out = Path(args.output)
    tmp = out.with_name(out.name + ".tmp")
    reasons: Counter = Counter()
    try:
        with tmp.open("w", encoding="utf-8") as fh, tqdm(total=len(prompts), unit="prompt", desc="distilling") as bar:
            records = answers(loaded, prompts, sampling, args.max_new_tokens, mode=args.mode,
                              batch_size=args.batch_size, block_size=args.block_size,
                              template_vars={"enable_thinking": True} if args.enable_thinking else {})
            for record in records:
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
                reasons[record["finish_reason"]] += 1
                bar.update(1)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    print(f"wrote {len(prompts)} answers {dict(reasons)} to {out}", file=sys.stderr)
    return 0


def answers(
    loaded,
    prompts: list[Prompt],
    sampling,
    max_new_tokens: int,
    *,
    mode: str = "ar",
    batch_size: int = 8,
    block_size: int | None = None,
    template_vars: dict[str, Any] | None = None,
) -> Iterator[dict[str, Any]]:
    """The output records, in prompt order, decoding ``batch_size`` prompts at a time; prompt i
    samples with seed ``sampling.seed + i`` (so the batch size does not change the answers)."""
    tok = loaded.tokenizer
    if tok is None and any(p.ids is None for p in prompts):
        raise UsageError(f"{loaded.source} has no tokenizer: give the prompts as JSONL {{\"prompt_ids\": [...]}} records")
    ids = [p.encode(tok, template_vars or {}) for p in prompts]
    vocab = loaded.config.vocab_size
    for p, row in zip(prompts, ids):
        if any(t >= vocab for t in row):
            raise UsageError(f"{p.where}: prompt token ids must be below the vocabulary size {vocab}, "
                             f"got {[t for t in row if t >= vocab][:5]}")
    device = str(next(loaded.model.parameters()).device)
    config = GenerationConfig(
        max_new_tokens=max_new_tokens, sampling=sampling, eos_token_ids=loaded.eos_token_ids,
        block_size=spec_for(mode).block(block_size, device),
    )
    decoder = decoder_for(mode, loaded.model)
    base = sampling.seed or 0
    for start in range(0, len(prompts), batch_size):
        rows = range(start, min(start + batch_size, len(prompts)))
        config = dataclasses.replace(config, seeds=tuple(base + i for i in rows))
        result = decoder.generate([ids[i] for i in rows], config)
        for i, seq, reason in zip(rows, result.sequences, result.finish_reasons):
            answer = None if prompts[i].ids is not None else tok.decode(seq, skip_special_tokens=True)
            yield _record(prompts[i], answer, seq, len(ids[i]), reason)


def _record(prompt: Prompt, answer: str | None, answer_ids: list[int], prompt_tokens: int, reason: str) -> dict[str, Any]:
    if prompt.ids is not None:
        head: dict[str, Any] = {"input_ids": prompt.ids + answer_ids,
                                "loss_mask": [False] * len(prompt.ids) + [True] * len(answer_ids)}
    elif prompt.messages is not None:
        head = {"messages": prompt.messages + [{"role": "assistant", "content": answer}]}
    else:
        head = {"prompt": prompt.text, "completion": answer}
    return {**head, "prompt_tokens": prompt_tokens, "answer_tokens": len(answer_ids), "finish_reason": reason}


def read_prompts(path: Path, chat: bool, system: str | None = None) -> list[Prompt]:
    if not path.is_file():
        raise DataError(f"prompt file {path} does not exist (expected a .txt or .jsonl file)")
    if system is not None and not chat:
        raise DataError("--system needs the chat template; drop --no-chat")
    prompts = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.rstrip("\r\n")
            if line.strip():
                where = f"{path}:{lineno}"
                prompts.append(dataclasses.replace(_prompt(where, line, path.suffix == ".jsonl", chat, system), where=where))
    if not prompts:
        raise DataError(f"prompt file {path} has no prompts")
    return prompts


def _prompt(where: str, line: str, jsonl: bool, chat: bool, system: str | None) -> Prompt:
    if not jsonl:
        text, messages = line, None
    else:
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{where}: invalid JSON ({err.msg} at column {err.colno})") from None
        if isinstance(obj, dict) and "prompt_ids" in obj:
            return _ids_prompt(where, obj["prompt_ids"], system)
        if isinstance(obj, dict) and isinstance(obj.get("prompt"), str):
            text, messages = obj["prompt"], None
        elif isinstance(obj, dict) and "messages" in obj:
            text, messages = None, validate_messages(where, obj["messages"])
            if messages[-1]["role"] == "assistant":  # answer it anew
                messages = messages[:-1]
            if not messages:
                raise DataError(f"{where}: the conversation has nothing but an assistant message")
            if not chat:
                raise DataError(f"{where}: 'messages' need the chat template; drop --no-chat")
        else:
            raise DataError(f"{where}: expected an object with a string 'prompt', a 'messages' list or 'prompt_ids'")
    if not chat:
        return Prompt(None, text)
    if messages is None:
        messages = [{"role": "user", "content": text}]
    if system is not None and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": system}] + messages
    return Prompt(messages, None)


def _ids_prompt(where: str, ids: Any, system: str | None) -> Prompt:
    if not isinstance(ids, list) or not ids or not all(isinstance(t, int) and t >= 0 for t in ids):
        raise DataError(f"{where}: 'prompt_ids' must be a non-empty list of token ids (integers >= 0)")
    if system is not None:
        raise DataError(f"{where}: 'prompt_ids' are used verbatim, so --system cannot be added to them")
    return Prompt(None, None, ids)
