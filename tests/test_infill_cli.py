"""``trimode infill``: the same middle as the library call, the JSON line, one-line errors."""

from __future__ import annotations

import json

import pytest

from trimode.cli import main


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    from conftest import tiny_text_checkpoint  # pytest puts tests/ on sys.path

    return str(tiny_text_checkpoint(tmp_path_factory.mktemp("infill")))


def test_the_command_gives_the_library_middle(capsys, text_model):
    from trimode.decoding import GenerationConfig
    from trimode.decoding.infill import InfillLayout, infill
    from trimode.model import load

    code = main(["infill", "--model", text_model, "--prefix", "def add(a, b):\n    return ", "--suffix", "\n\nprint(1)",
                 "--max-middle", "6", "--block-size", "8", "--window", "3", "--json"])
    out, err = capsys.readouterr()
    assert code == 0 and "loading" in err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["generated_tokens"] == 6 and report["window"] == 3 and report["chunk"] == 5
    loaded = load(text_model)
    tok = loaded.tokenizer
    want = infill(loaded.model, [tok.encode("def add(a, b):\n    return ")], [tok.encode("\n\nprint(1)", add_special_tokens=False)],
                  GenerationConfig(max_new_tokens=6, block_size=8), InfillLayout(window=3)).middles[0]
    assert report["middle_ids"] == want and report["middle"] == tok.decode(want, skip_special_tokens=True)
    assert report["nfe"] == report["forwards"]["prefill"] + report["forwards"]["denoise"] + report["forwards"].get("commit", 0)


def test_a_bad_value_is_a_one_line_error(capsys, text_model):
    assert main(["infill", "--model", text_model, "--prefix", "a", "--suffix", "b", "--window", "-1"]) == 2
    err = capsys.readouterr().err
    assert "--window must be >= 0" in err and "Traceback" not in err


@pytest.mark.parametrize("argv, message", [(["--max-middle", "0"], "must be >= 1"), (["--placement", "middle"], "invalid choice")])
def test_a_bad_flag_is_a_usage_error(capsys, text_model, argv, message):
    with pytest.raises(SystemExit) as exit_:
        main(["infill", "--model", text_model, "--prefix", "a", "--suffix", "b", *argv])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
