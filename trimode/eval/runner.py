"""The loop every evaluation shares: each setting generates answers for the same prompts, a task's
scorer grades them, and a results file is (re)written after every setting so a long run that is
stopped keeps what it finished.

Per setting it reports the accuracy, tokens per forward, tokens/s (wall time of the generate calls,
warm-up excluded), the share of answers token-for-token equal to greedy AR's (when AR ran first),
and the accepted-length histogram; per item, the task's grading plus the generated text and counts.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..decoding import decoder_for
from ..decoding.base import StopCondition
from ..runinfo import machine_info
from .generation import Output, Setting, generate_all

# Grades a setting's outputs: one dict per item, each with a boolean "correct".
Scorer = Callable[[list[Output]], list[dict[str, Any]]]


def evaluate(task: str, loaded, settings: Sequence[Setting], prompts: Sequence[Sequence[int]], ids: Sequence[str],
             score: Scorer, *, max_new_tokens: int, batch_size: int, stop: StopCondition | None = None,
             out: Path | None = None, header: dict[str, Any] | None = None) -> dict[str, Any]:
    if not prompts:
        raise ValueError(f"{task}: no prompts to evaluate")
    result: dict[str, Any] = {
        "task": task,
        "model": str(loaded.source),
        "mask_token_id": loaded.config.mask_token_id,
        "items": len(prompts),
        "max_new_tokens": max_new_tokens,
        "batch_size": batch_size,
        "stop": repr(stop) if stop is not None else None,
        "counting": "generated tokens exclude the prompt and include EOS; nfe counts every forward "
                    "(prefill included, a batched forward once); tokens/s = generated tokens / wall time "
                    "of the generate calls, warm-up excluded, batches of prompts sorted by length",
        **(header or {}),
        "machine": machine_info(),
        "command": "trimode " + " ".join(sys.argv[1:]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": [],
    }
    reference: list[list[int]] | None = None
    for setting in settings:
        decoder = decoder_for(setting.mode, loaded.model)
        decoder.generate([list(prompts[0])], setting.config(4, loaded.eos_token_ids))  # warm-up, excluded
        run = generate_all(decoder, setting, prompts, max_new_tokens=max_new_tokens,
                           eos_token_ids=loaded.eos_token_ids, batch_size=batch_size, tokenizer=loaded.tokenizer,
                           stop=stop, progress=f"{task} {setting.label}")
        graded, totals = score(run.outputs), run.totals
        if setting.mode == "ar" and reference is None:
            reference = [o.ids for o in run.outputs]
        same = None if reference is None else [o.ids == r for o, r in zip(run.outputs, reference)]
        items = []
        for i, (item_id, o, g) in enumerate(zip(ids, run.outputs, graded)):
            items.append({"id": item_id, **g, "equals_ar": None if same is None else same[i],
                          "generated_tokens": len(o.ids), "finish": o.finish, "text": o.text})
        correct = sum(bool(g["correct"]) for g in graded)
        result["results"].append({
            **setting.to_dict(),
            "accuracy": correct / len(graded),
            "correct": correct,
            "tokens_per_forward": totals.tokens_per_forward,
            "tokens_per_second": totals.tokens_per_second,
            "generated_tokens": totals.generated_tokens,
            "nfe": totals.nfe,
            "elapsed_s": totals.elapsed_s,
            "equals_ar": None if same is None else sum(same) / len(same),
            "accepted_length_histogram": run.histogram(),
            "items": items,
        })
        print(f"{task} {setting.label:<28} accuracy {correct}/{len(graded)} = {correct / len(graded):.3f}  "
              f"tok/fwd {totals.tokens_per_forward:.2f}  tok/s {totals.tokens_per_second:.1f}"
              + ("" if same is None else f"  equal to AR {sum(same)}/{len(same)}"), file=sys.stderr)
        if out is not None:
            write(result, out)
    result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if out is not None:
        write(result, out)
    return result


def write(result: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(path)


def summary_line(result: dict[str, Any]) -> str:
    """The final stdout line: accuracy and speed per setting, without per-item detail."""
    keys = ("label", "mode", "block_size", "threshold", "accuracy", "tokens_per_forward", "tokens_per_second",
            "equals_ar")
    return json.dumps({"task": result["task"], "items": result["items"],
                       "results": [{k: r[k] for k in keys} for r in result["results"]]})
