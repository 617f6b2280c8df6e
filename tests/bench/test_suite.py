"""`trimode bench` (the suite) on a tiny text checkpoint: the table, the JSON line with the per-mode
keys, the results file with per-prompt figures, the plots; named sub-benchmarks still dispatch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trimode.cli import main

MODE_KEYS = {"tokens_per_forward", "tokens_per_second", "speedup_vs_ar", "speedup_vs_transformers", "equals_ar",
             "accepted_length_histogram"}


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    from conftest import tiny_text_checkpoint

    tmp = tmp_path_factory.mktemp("suite")
    ckpt = tiny_text_checkpoint(tmp)
    out = tmp / "results" / "suite.json"
    argv = ["bench", "--quick", "--json", "--model", str(ckpt), "--max-new-tokens", "6", "--no-transformers",
            "--out", str(out)]
    return argv, out


def test_quick_suite_json_line_and_file(quick, capsys):
    argv, out = quick
    assert main(argv) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert len(lines) == 1  # --json: stdout is the JSON line alone, the table went to stderr
    assert "tok/fwd" in captured.err
    line = json.loads(lines[0])
    assert set(line["modes"]) == {"ar", "diffusion", "linear-spec", "quadratic-spec"}
    for mode, head in line["modes"].items():
        assert MODE_KEYS <= set(head), mode
        assert head["tokens_per_forward"] > 0 and head["tokens_per_second"] > 0
    assert line["modes"]["ar"]["equals_ar"] is True and line["modes"]["ar"]["speedup_vs_ar"] == 1.0
    # self-speculation is lossless at T=0
    assert line["modes"]["linear-spec"]["equals_ar"] is True
    assert line["modes"]["quadratic-spec"]["equals_ar"] is True
    assert line["modes"]["diffusion"]["label"] == "diffusion/B16/t0.9"  # headline: the default threshold

    saved = json.loads(out.read_text())
    assert {"machine", "settings", "counting", "prompt_sets", "results", "command"} <= set(saved)
    assert saved["settings"]["batch_sizes"] == [1, 3]
    batches = {(r["label"], r["batch_size"]) for r in saved["results"]}
    assert ("diffusion/B16/t0.5", 1) in batches and ("ar", 3) in batches
    assert ("diffusion/B16/t0.5", 3) not in batches  # the batch sweep runs the headline settings only
    row = saved["results"][0]
    assert len(row["per_prompt"]) == 3  # one eval prompt from each bundled set
    assert row["per_prompt"][0]["nfe"] > 0
    assert sum(p["generated_tokens"] for p in row["per_prompt"]) == row["generated_tokens"]
    for png in line["plots"]:
        assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_without_name_is_the_suite(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["bench", "--help"])
    assert stop.value.code == 0
    assert "--quick" in capsys.readouterr().out


def test_named_benchmarks_still_dispatch(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "modes", "--help"])
    assert "trimode bench modes" in capsys.readouterr().out


def test_speedups_against_same_batch():
    from trimode.bench.suite import _speedups

    rows = [{"mode": "ar", "batch_size": 1, "tokens_per_second": 10.0},
            {"mode": "diffusion", "batch_size": 1, "tokens_per_second": 25.0},
            {"mode": "ar", "batch_size": 4, "tokens_per_second": 30.0},
            {"mode": "diffusion", "batch_size": 4, "tokens_per_second": 15.0}]
    _speedups(rows, [{"batch_size": 1, "tokens_per_second": 5.0}])
    assert [r["speedup_vs_ar"] for r in rows] == [1.0, 2.5, 1.0, 0.5]
    assert rows[1]["speedup_vs_transformers"] == 5.0 and rows[3]["speedup_vs_transformers"] is None
