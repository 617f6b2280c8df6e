"""``trimode bench draft-curve``: tokens per forward per mode of every snapshot of a drafter run,
beside its held-out draft accuracy, against training minutes."""

from __future__ import annotations

import json

from trimode.bench.draft_curve import main
from trimode.train.config import TrainConfig
from trimode.train.objective import ObjectiveConfig
from trimode.train.run import train


def test_draft_curve_reads_a_run_and_decodes_each_snapshot(tmp_path, capsys):
    from conftest import tiny_text_checkpoint

    ckpt = tiny_text_checkpoint(tmp_path / "ckpt")
    data = tmp_path / "data.txt"
    data.write_text("def add(a, b):\n    return a + b\n" * 40)
    run = tmp_path / "run"
    train(TrainConfig(model=str(ckpt), data=(str(data),), output=str(run), max_steps=4, seq_len=32, batch_size=2,
                      lr=1e-2, schedule="constant", progress=False, eval_data=(str(data),), eval_every=2,
                      eval_rows=2, snapshot_every=2,
                      objective=ObjectiveConfig(kind="adapter", block_size=4, draft_loss="all")))
    out, png = tmp_path / "curve.json", tmp_path / "curve.png"
    assert main(["--run", str(run), "--prompts", "2", "--max-new-tokens", "8", "--out", str(out), "--plot", str(png)]) == 0
    result = json.loads(out.read_text())
    assert [r["step"] for r in result["snapshots"]] == [0, 2, 4]
    for row in result["snapshots"]:
        assert row["linear-spec"]["block"] == 8 and row["quadratic-spec"]["block"] == 4
        assert all(row[m]["tokens_per_forward"] > 0 for m in ("linear-spec", "quadratic-spec", "diffusion"))
        assert all(0.0 <= row[m]["repeated_3grams"] <= 1.0 for m in ("linear-spec", "quadratic-spec", "diffusion"))
    assert [e["step"] for e in result["eval_curve"]] == [0, 2, 4] and png.stat().st_size > 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["benchmark"] == "draft-curve"
