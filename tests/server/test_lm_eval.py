"""lm-evaluation-harness end to end: its ``lm-eval run`` command, ``local-completions`` with its
default ``tokenized_requests`` and ``batch_size`` 4, against a live ``trimode serve`` process on a
tiny checkpoint, on two local YAML tasks (``dataset_path: json``): a ``generate_until`` task and a
multiple-choice ``loglikelihood`` task. Both finish, and every loglikelihood lm-eval computed from
the server's logprobs equals trimode's own AR scoring of the same tokens to 1e-4."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import tiny_text_checkpoint  # pytest puts tests/ on sys.path

from trimode.bench.lm_eval import Server, run_lm_eval
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
    """A live ``trimode serve`` process (the benchmark's launcher: it waits for /health)."""
    root = tmp_path_factory.mktemp("lm_eval")
    folder = tiny_text_checkpoint(root)
    server = Server(str(folder), "ar", "cpu", root / "serve.log")
    try:
        yield root, folder, server
    finally:
        server.close()


def test_lm_eval_runs_both_tasks_and_its_loglikelihoods_match_ar_scoring(served):
    root, folder, server = served
    tasks, out = write_tasks(root / "tasks"), root / "results"
    # `lm-eval run --model local-completions` in its own process, batch 4, default tokenized_requests.
    results, _, command = run_lm_eval(server, str(folder), ["tiny_mc", "tiny_gen"], tasks, out, batch=4, chat=False)
    assert "tokenized_requests" not in " ".join(command) and command[command.index("--batch_size") + 1] == "4"
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
