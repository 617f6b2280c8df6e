"""lm-evaluation-harness end to end: its ``lm-eval run`` command, ``local-completions`` with its
default ``tokenized_requests`` and ``batch_size`` 4, against a live ``trimode serve`` process on a
tiny checkpoint, on two local YAML tasks (``dataset_path: json``): a ``generate_until`` task and a
multiple-choice ``loglikelihood`` task. Both finish, and every loglikelihood lm-eval computed from
the server's logprobs equals trimode's own AR scoring of the same tokens to 1e-4."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import tiny_text_checkpoint  # pytest puts tests/ on sys.path
from live_server import free_port  # tests/server is on sys.path too

from trimode.decoding.score import score
from trimode.model import load

pytest.importorskip("lm_eval")

MC = [
    {"question": "2 + 2 =", "choices": ["4", "5", "22"], "answer": 0},
    {"question": "The sky is", "choices": ["blue", "green"], "answer": 0},
    {"question": "Opposite of up:", "choices": ["left", "down", "in", "out"], "answer": 1},
    {"question": "abc then", "choices": ["d", "e", "f"], "answer": 0},
    {"question": "Cats say", "choices": ["meow", "moo"], "answer": 0},
]
GEN = [{"question": f"Q: {a} + {b} =", "answer": str(a + b)} for a, b in [(1, 2), (3, 4), (10, 5), (7, 7), (2, 9)]]

TASKS = {
    "tiny_mc": {
        "output_type": "multiple_choice", "doc_to_text": "{{question}}", "doc_to_choice": "{{choices}}",
        "doc_to_target": "{{answer}}", "metric_list": [{"metric": "acc"}],
    },
    "tiny_gen": {
        "output_type": "generate_until", "doc_to_text": "{{question}}", "doc_to_target": "{{answer}}",
        "generation_kwargs": {"until": ["\n"], "max_gen_toks": 8, "do_sample": False},
        "metric_list": [{"metric": "exact_match"}],
    },
}


def write_tasks(folder: Path) -> Path:
    folder.mkdir()
    for name, rows in (("tiny_mc", MC), ("tiny_gen", GEN)):
        data = folder / f"{name}.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        # JSON is a subset of YAML: the task files need no YAML writer.
        task = {"task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
                "test_split": "test", **TASKS[name]}
        (folder / f"{name}.yaml").write_text(json.dumps(task, indent=1))
    return folder


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm_eval")
    folder = tiny_text_checkpoint(root)
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "trimode.cli", "serve", "--model", str(folder), "--mode", "ar",
                             "--port", str(port), "--served-model-name", "tiny"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            if proc.poll() is not None:
                pytest.fail(f"trimode serve exited: {proc.stdout.read()}")
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.25)
        else:
            pytest.fail("trimode serve did not come up in 60 s")
        yield root, folder, url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_lm_eval_runs_both_tasks_and_its_loglikelihoods_match_ar_scoring(served):
    root, folder, url = served
    tasks, out = write_tasks(root / "tasks"), root / "results"
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    args = ["run", "--model", "local-completions", "--tasks", "tiny_mc,tiny_gen", "--include_path", str(tasks),
            "--model_args", f"model=tiny,base_url={url}/v1/completions,tokenizer={folder},"
                            "tokenizer_backend=huggingface,num_concurrent=1,max_retries=1",
            "--batch_size", "4", "--output_path", str(out), "--log_samples"]
    run = subprocess.run([sys.executable, "-m", "lm_eval", *args], capture_output=True, text=True, env=env,
                         timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads(next(out.rglob("results_*.json")).read_text())["results"]
    assert 0.0 <= results["tiny_mc"]["acc,none"] <= 1.0
    assert 0.0 <= results["tiny_gen"]["exact_match,none"] <= 1.0

    loaded = load(folder)
    tok, model = loaded.tokenizer, loaded.model
    samples = [json.loads(line) for line in next(out.rglob("samples_tiny_mc_*.jsonl")).read_text().splitlines()]
    assert len(samples) == len(MC)
    checked = 0
    for sample in samples:
        # arguments: {"gen_args_i": {"arg_0": context, "arg_1": continuation}}; resps: [[[loglikelihood, is_greedy]]]
        pairs = [(a["arg_0"], a["arg_1"]) for a in sample["arguments"].values()]
        assert len(pairs) == len(sample["resps"])
        for (context, continuation), resp in zip(pairs, sample["resps"]):
            whole, ctx = tok.encode(context + continuation), tok.encode(context)
            assert whole[: len(ctx)] == ctx
            want = score(model, whole, start=len(ctx)).total()
            assert float(resp[0][0]) == pytest.approx(want, abs=1e-4), (context, continuation)
            checked += 1
    assert checked == sum(len(r["choices"]) for r in MC)
    generated = [json.loads(line) for line in next(out.rglob("samples_tiny_gen_*.jsonl")).read_text().splitlines()]
    assert len(generated) == len(GEN) and all(isinstance(s["resps"][0][0], str) for s in generated)
