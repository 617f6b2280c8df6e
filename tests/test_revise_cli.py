"""``trimode revise``: the library's revision, the JSON line, one-line errors."""

from __future__ import annotations

import json

import pytest

from trimode.cli import main


def test_the_command_gives_the_library_revision(capsys, tmp_path):
    from conftest import tiny_text_checkpoint  # pytest puts tests/ on sys.path

    from trimode.decoding import GenerationConfig
    from trimode.decoding.revise import revise
    from trimode.model import load

    ckpt = str(tiny_text_checkpoint(tmp_path))
    code = main(["revise", "--model", ckpt, "--context", "Q: 2+2?\nA:", "--text", " four, I think so.", "--rounds", "2",
                 "--tokens", "3", "--block-size", "4", "--json"])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and len(report["rounds"]) == 2 and all(len(r) == 3 for r in report["remasked"])
    loaded = load(ckpt)
    tok = loaded.tokenizer
    want = revise(loaded.model, tok.encode("Q: 2+2?\nA:"), tok.encode(" four, I think so.", add_special_tokens=False),
                  GenerationConfig(block_size=4), rounds=2, per_round=3)
    assert report["token_ids"] == want.tokens and report["forwards"]["score"] == 3
    for got, ch in zip(report["rounds"][0], want.rounds[0]):
        assert (got["position"], got["new_id"]) == (ch.position, ch.new)


@pytest.mark.parametrize("argv, message", [(["--rounds", "0"], "must be >= 1"), (["--threshold", "2"], "threshold")])
def test_bad_flags_are_usage_errors(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        main(["revise", "--text", "x", *argv])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
