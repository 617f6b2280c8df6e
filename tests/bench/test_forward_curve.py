"""`trimode bench forward-curve`: the curve on a tiny checkpoint, and the block choice it implies."""

from __future__ import annotations

import json

import pytest

from trimode.bench.forward_curve import best_blocks, ideal_speedup
from trimode.cli import main


def test_block_choice_follows_the_cost_curve():
    flat = {1: 1.0, 2: 1.0, 4: 1.0, 8: 1.0, 16: 1.0, 32: 1.0}  # GPU-like: width is free
    linear = {1: 1.0, 2: 2.0, 4: 4.0, 8: 8.0, 16: 16.0, 32: 32.0}  # compute-bound from the first token
    cpu = {1: 1.0, 2: 1.05, 4: 1.15, 8: 1.4, 16: 1.9, 32: 2.4}  # the ratio the issue quotes at 32
    assert ideal_speedup(flat, 4, 1.0) == pytest.approx(2.0)  # 4 tokens for 2 forwards
    assert best_blocks(flat, (0.9,))[0.9] == 32
    assert best_blocks(linear, (0.9,))[0.9] == 2
    best = best_blocks(cpu, (0.5, 0.8, 0.95))
    assert best[0.5] <= best[0.8] <= best[0.95] and best[0.5] < 32


def test_cli_prints_the_curve_and_a_json_line(tmp_path, capsys):
    from conftest import tiny_text_checkpoint

    ckpt = tiny_text_checkpoint(tmp_path)
    out = tmp_path / "curve.json"
    assert main(["bench", "forward-curve", "--model", str(ckpt), "--tokens", "1", "2", "4", "--context", "8",
                 "--repeats", "2", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    assert [r["tokens"] for r in result["curve"]] == [1, 2, 4]
    assert result["curve"][0]["relative_to_1"] == 1.0 and all(r["ms"] > 0 for r in result["curve"])
    assert set(result["best_block_by_alpha"].values()) <= {2, 4}
    assert json.loads(out.read_text())["command"].startswith("trimode bench forward-curve --model")
    assert any(line.startswith("alpha") for line in lines)


def test_kernels_take_turns_and_each_gets_a_curve(tmp_path, capsys):
    from conftest import tiny_text_checkpoint

    ckpt = tiny_text_checkpoint(tmp_path)
    assert main(["bench", "forward-curve", "--model", str(ckpt), "--tokens", "1", "4", "--context", "8",
                 "--repeats", "1", "--kernels", "plain", "onednn", "--rounds", "2"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    assert result["kernel"] == "plain" and set(result["kernels"]) == {"plain", "onednn"}
    assert all([r["tokens"] for r in s["curve"]] == [1, 4] for s in result["kernels"].values())
    assert "kernel: onednn" in out
    with pytest.raises(SystemExit):
        main(["bench", "forward-curve", "--model", str(ckpt), "--kernels", "blas"])
