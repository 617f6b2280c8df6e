"""``trimode demo``: every mode streamed on held-out prompts, then the table and a JSON line."""

from __future__ import annotations

import json

import pytest

from trimode.cli import main
from trimode.demo import demo_prompts
from trimode.eval import prompts as bundled


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from conftest import tiny_text_checkpoint

    return tiny_text_checkpoint(tmp_path_factory.mktemp("demo"))


def test_demo_streams_every_mode_and_ends_with_the_table(tiny, capsys):
    assert main(["demo", "--model", str(tiny), "--max-new-tokens", "10", "--prompts", "2", "--json"]) == 0
    out = capsys.readouterr().out
    for mode, block in (("linear-spec", 8), ("quadratic-spec", 4), ("diffusion", 8)):
        assert f"--- {mode} (block {block}) · prompt 2" in out
    result = json.loads(out.strip().splitlines()[-1])
    rows = {r["mode"]: r for r in result["demo"]}
    assert list(rows) == ["ar", "linear-spec", "quadratic-spec", "diffusion"]
    assert rows["ar"]["tokens_per_forward"] == pytest.approx(1.0)
    assert rows["linear-spec"]["equals_ar"] and rows["quadratic-spec"]["equals_ar"]
    for r in rows.values():
        assert 0 < r["tokens"] <= 20 and r["forwards"] > 0 and r["tokens_per_second"] > 0
        assert r["tokens_per_forward"] == pytest.approx(r["tokens"] / r["forwards"], abs=1e-3)
    lines = out.splitlines()
    head = max(i for i, line in enumerate(lines) if line.startswith("mode "))
    assert [line.split()[0] for line in lines[head + 2 : head + 6]] == list(rows)
    eval_prompts = {item.prompt.splitlines()[0][:70] for item in bundled.load_all("eval")}
    shown = {line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("--- ar")}
    assert shown and shown <= eval_prompts  # held-out prompts only


def test_demo_prompts_cycle_through_code_chat_math(tiny):
    from trimode.model import load

    tok = load(tiny).tokenizer
    prompts = demo_prompts(tok, 4)
    kinds = [next(i.kind for i in bundled.load_all("eval") if i.prompt == text) for text, _ in prompts]
    assert kinds == ["code", "chat", "math", "code"]

