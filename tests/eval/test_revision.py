"""Revision on HumanEval: corruption changes exactly k tokens to pool tokens, reproducibly; the
task runs end to end and counts per round."""

from __future__ import annotations

import json
import random

from trimode.cli import main
from trimode.eval.revision import corrupt


def test_corrupt_changes_exactly_k_tokens_to_pool_tokens():
    tokens, pool = list(range(10, 40)), [1, 2, 3, 10, 11]
    out = corrupt(tokens, 4, pool, random.Random("0:4:7"))
    changed = [j for j, (a, b) in enumerate(zip(tokens, out)) if a != b]
    assert len(changed) == 4 and all(out[j] in pool for j in changed)
    assert out == corrupt(tokens, 4, pool, random.Random("0:4:7"))


def test_eval_humaneval_revise_counts_rounds(tmp_path, capsys):
    from conftest import tiny_text_checkpoint

    ckpt = tiny_text_checkpoint(tmp_path)
    out = tmp_path / "revise.json"
    assert main(["eval", "humaneval-revise", "--model", str(ckpt), "--limit", "2", "--corrupt", "1", "--rounds", "2",
                 "--block-size", "4", "--out", str(out)]) == 0
    saved = json.loads(out.read_text())
    (r,) = saved["results"]
    assert r["k"] == 1 and r["corrupted"] == 2 and len(r["passing_after_round"]) == 3
    assert r["passing_after_round"][0] == 0 and r["passing_after_round"][1] <= r["passing_after_round"][2]
    assert r["forwards"] >= 2 * 2 * 3  # per problem and round: two scoring passes and a denoising pass at least
    assert main(["eval", "humaneval-revise", "--model", str(ckpt), "--rounds", "0"]) == 2
