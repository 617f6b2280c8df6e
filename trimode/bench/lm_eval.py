"""lm-evaluation-harness against ``trimode serve``, as a user runs it: one server process per mode,
then ``lm-eval run --model local-completions`` (default ``tokenized_requests``, the checkpoint's
own Hugging Face tokenizer files) on offline tasks made from the installed data package:

* ``trimode_gpqa_mc``: GPQA Diamond, multiple choice by loglikelihood (``acc``, ``acc_norm``).
  The loglikelihoods are the verifier's in every mode, so this task runs in the first mode only.
* ``trimode_gsm8k``: GSM8K test, ``generate_until`` with the chat template, greedy, 256 new
  tokens; exact match of the last number written (commas, "$", trailing ".0" ignored). Generation
  differs by mode (diffusion is not lossless), so it runs in every mode, each timed.

Timings are wall clock of the whole ``lm-eval`` run against a warm server (the model load is not
included), at lm-eval's ``--batch_size`` (several prompts per request; the engine batches them).
Needs the ``lm-eval[api]`` package (in the test extra).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..decoding.spec import ENGINE_MODES
from ..eval import gpqa, gsm8k
from ..model.defaults import default_model_path
from ..runinfo import machine_info, write_result
from .live import SERVED, Server

LAST_NUMBER = r"-?\$?\d[\d,]*(?:\.\d+)?"


def task_files(folder: Path, gpqa_limit: int | None, gsm8k_limit: int | None) -> dict[str, str]:
    """Write both tasks (YAML, which JSON is a subset of, plus their data) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = {"trimode_gpqa_mc": gpqa.questions(gpqa_limit), "trimode_gsm8k": gsm8k.questions(gsm8k_limit)}
    specs = {
        "trimode_gpqa_mc": {
            "output_type": "multiple_choice",
            "doc_to_text": "Question: {{question}}\nAnswer:", "doc_to_choice": "{{choices}}", "doc_to_target": "{{answer}}",
            "metric_list": [{"metric": "acc"}, {"metric": "acc_norm"}],
        },
        "trimode_gsm8k": {
            "output_type": "generate_until",
            "doc_to_text": "{{question}}\n\n" + gsm8k.INSTRUCTION, "doc_to_target": "{{answer}}",
            "generation_kwargs": {"until": ["<|im_end|>"], "max_gen_toks": 256, "do_sample": False, "temperature": 0},
            "filter_list": [{"name": "last-number", "filter": [
                {"function": "regex", "regex_pattern": LAST_NUMBER, "group_select": -1},
                {"function": "take_first"}]}],
            "metric_list": [{"metric": "exact_match", "ignore_case": True, "ignore_punctuation": False,
                             "regexes_to_ignore": [",", "\\$", "\\.0+$", "\\.$", "\\s"]}],
        },
    }
    for name, items in rows.items():
        data = folder / f"{name}.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in items))
        task = {"task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
                "test_split": "test", **specs[name]}
        (folder / f"{name}.yaml").write_text(json.dumps(task, indent=1))
    return {name: str(folder / f"{name}.yaml") for name in rows}


def run_lm_eval(server: Server, tokenizer: str, tasks: list[str], include: Path, out: Path, batch: int,
                chat: bool) -> tuple[dict[str, Any], float, list[str]]:
    """One ``lm-eval run``: its results (per task), its wall seconds, and the command."""
    command = [sys.executable, "-m", "lm_eval", "run", "--model", "local-completions", "--tasks", ",".join(tasks),
               "--include_path", str(include), "--batch_size", str(batch), "--output_path", str(out), "--log_samples",
               "--model_args", f"model={SERVED},base_url={server.url}/v1/completions,tokenizer={tokenizer},"
                               "tokenizer_backend=huggingface,num_concurrent=1,max_retries=3,timeout=3600"]
    if chat:
        command.append("--apply_chat_template")
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"lm-eval failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    newest = max(out.rglob("results_*.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(newest.read_text())["results"], seconds, command


def tokenizer_folder(model: str) -> str:
    folder = Path(model)
    if not (folder / "tokenizer.json").is_file():
        raise SystemExit(f"{model} holds no tokenizer.json: lm-eval needs the checkpoint's Hugging Face tokenizer "
                         "files (the default model, trimode export and every delta write them)")
    return str(folder)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="trimode bench lm-eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="checkpoint folder (default: the default model)")
    p.add_argument("--modes", default="ar,linear-spec,quadratic-spec,diffusion",
                   help=f"comma-separated, from {', '.join(ENGINE_MODES)}")
    p.add_argument("--device", default="cpu")
    p.add_argument("--gpqa-limit", type=int, default=None, help="first N GPQA questions (default: all 198)")
    p.add_argument("--gsm8k-limit", type=int, default=100, help="first N GSM8K test problems (0: skip the task)")
    p.add_argument("--batch-size", type=int, default=4, help="lm-eval's --batch_size: prompts per request")
    p.add_argument("--work", default=None, help="folder for tasks, server logs and lm-eval outputs (default: a temp dir)")
    p.add_argument("--out", default=None, help="also write the JSON here")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in ENGINE_MODES]
    if bad or not modes:
        p.error(f"--modes: unknown {bad} (expected some of {', '.join(ENGINE_MODES)})")
    model = args.model or str(default_model_path())
    tokenizer = tokenizer_folder(model)
    work = Path(args.work or tempfile.mkdtemp(prefix="trimode-lm-eval-"))
    task_files(work / "tasks", args.gpqa_limit, args.gsm8k_limit or None)
    runs = []
    for i, mode in enumerate(modes):
        server = Server(model, mode, args.device, work / f"serve.{mode}.log")
        try:
            plan = ([("trimode_gpqa_mc", False)] if i == 0 else []) + ([("trimode_gsm8k", True)] if args.gsm8k_limit else [])
            for task, chat in plan:
                results, seconds, command = run_lm_eval(server, tokenizer, [task], work / "tasks", work / "out" / mode,
                                                        args.batch_size, chat)
                metrics = {k: v for k, v in results[task].items() if isinstance(v, (int, float)) and "," in k}
                runs.append({"task": task, "mode": mode, "metrics": metrics, "seconds": round(seconds, 1),
                             "samples": results[task].get("sample_len"),
                             "command": " ".join(c if " " not in c else repr(c) for c in command[1:])})
                print(f"{task:18s} {mode:15s} {seconds:8.1f} s  " +
                      "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()), flush=True)
        finally:
            server.close()
    result = {"benchmark": "lm-eval", "command": "trimode bench lm-eval " + " ".join(argv), "model": model,
              "batch_size": args.batch_size, "runs": runs, "machine": machine_info()}
    write_result(result, args.out)
    return 0
