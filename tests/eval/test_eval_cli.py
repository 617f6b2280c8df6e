"""`trimode eval` end to end on a tiny text checkpoint (random weights: accuracy is ~0, but the
file, keys and per-item grading must be there)."""

from __future__ import annotations

import json

from trimode.cli import main


def test_eval_gsm8k_writes_results(tmp_path, capsys):
    from conftest import tiny_text_checkpoint

    ckpt = tiny_text_checkpoint(tmp_path)
    out = tmp_path / "gsm8k.json"
    assert main(["eval", "gsm8k", "--model", str(ckpt), "--limit", "3", "--batch-size", "2",
                 "--max-new-tokens", "6", "--mode", "ar", "diffusion", "--threshold", "0.5", "0.9",
                 "--block-size", "4", "--out", str(out)]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["label"] for r in line["results"]] == ["ar", "diffusion/B4/t0.5", "diffusion/B4/t0.9"]
    saved = json.loads(out.read_text())
    assert saved["items"] == 3 and saved["finished"]
    ar = saved["results"][0]
    assert ar["equals_ar"] == 1.0 and len(ar["items"]) == 3
    assert {"correct", "predicted", "answer", "generated_tokens", "text"} <= set(ar["items"][0])
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["nfe"] > 0 for r in saved["results"])


def test_eval_humaneval_runs_the_harness(tmp_path, capsys):
    from conftest import tiny_text_checkpoint

    ckpt = tiny_text_checkpoint(tmp_path)
    out = tmp_path / "he.json"
    assert main(["eval", "humaneval", "--model", str(ckpt), "--limit", "2", "--max-new-tokens", "4",
                 "--mode", "ar", "linear-spec", "--linear-block", "3", "--out", str(out)]) == 0
    saved = json.loads(out.read_text())
    spec = saved["results"][1]
    assert spec["label"] == "linear-spec/B3/t0" and spec["equals_ar"] == 1.0  # lossless at T=0
    assert all(item["result"] for item in spec["items"])  # the harness ran each program


def test_eval_rejects_bad_batch(tmp_path, capsys):
    assert main(["eval", "gsm8k", "--batch-size", "0"]) == 2
    assert "--batch-size must be >= 1" in capsys.readouterr().err


def test_eval_humaneval_infill_grades_every_method(tmp_path, capsys):
    from conftest import tiny_text_checkpoint

    ckpt = tiny_text_checkpoint(tmp_path)
    out = tmp_path / "infill.json"
    assert main(["eval", "humaneval-infill", "--model", str(ckpt), "--limit", "1", "--budget", "oracle",
                 "--block-size", "8", "--window", "3", "--out", str(out)]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["tasks"] == 7 and set(line) >= {"infill", "ar-prefix", "ar-fim"}
    saved = json.loads(out.read_text())
    infill = saved["results"][0]
    assert (infill["method"], infill["budget"], infill["window"], infill["chunk"]) == ("infill", "oracle", 3, 5)
    assert len(infill["tasks"]) == 7 and all({"id", "correct", "line"} <= set(t) for t in infill["tasks"])
    assert all(r["nfe"] > 0 for r in saved["results"])
    assert main(["eval", "humaneval-infill", "--model", str(ckpt), "--budget", "none"]) == 2
