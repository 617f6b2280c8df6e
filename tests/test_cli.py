"""The ``trimode generate`` contract: flags, the JSON line, and one-line errors."""

from __future__ import annotations

import json

import pytest

from trimode.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_generate_json_contract(capsys, nld_tiny_dir, golden):
    case = next(c for c in golden["ar_generate"] if c["id"] == "ar/peos")
    prompt = ",".join(map(str, golden["prompts"]["peos"]))
    code, out, _ = run(capsys, "generate", "--model", str(nld_tiny_dir), "--mode", "ar", "--prompt-ids", prompt,
                       "--max-new-tokens", "64", "--json")
    assert code == 0
    report = last_json(out)
    for key in ("mode", "token_ids", "text", "nfe", "tokens_per_forward", "tokens_per_second", "elapsed_s"):
        assert key in report
    assert report["mode"] == "ar"
    assert report["token_ids"] == case["new_tokens"]  # ends with EOS (11), which is kept
    assert report["nfe"] == len(case["new_tokens"])
    assert report["tokens_per_forward"] == pytest.approx(1.0)
    assert report["text"] is None  # the fixture ships no tokenizer
    assert report["finish_reason"] == "eos"


def test_batch_of_prompt_ids(capsys, nld_tiny_dir, golden):
    p5 = ",".join(map(str, golden["prompts"]["p5"]))
    peos = ",".join(map(str, golden["prompts"]["peos"]))
    code, out, _ = run(capsys, "generate", "--model", str(nld_tiny_dir), "--prompt-ids", p5, "--prompt-ids", peos,
                       "--max-new-tokens", "20", "--json")
    assert code == 0
    report = last_json(out)
    assert len(report["token_ids"]) == 2 and report["finish_reason"] == ["length", "eos"]


def test_seeded_sampling_is_reproducible(capsys, nld_tiny_dir):
    args = ("generate", "--model", str(nld_tiny_dir), "--prompt-ids", "5,17,3", "--temperature", "1.0",
            "--top-p", "0.9", "--seed", "7", "--max-new-tokens", "12", "--json")
    first = last_json(run(capsys, *args)[1])
    second = last_json(run(capsys, *args)[1])
    assert first["token_ids"] == second["token_ids"] and len(first["token_ids"]) == 12


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--prompt-ids", "5,x,3"], "comma-separated integers"),
        (["--prompt-ids", "5,17", "--threshold", "2"], "threshold must be in"),
        (["--prompt", "hello"], "has no tokenizer"),
        (["--prompt-ids", "5,9999"], "outside the vocabulary"),
        (["--prompt-ids", "5", "--max-new-tokens", "0"], "max-new-tokens must be >= 1"),
        (["--prompt-ids", "5", "--top-p", "0"], "top_p must be in"),
        (["--prompt-ids", "5", "--device", "cuda"], None),
        (["--prompt-ids", "5", "--mode", "linear-spec", "--block-size", "1"], "block_size >= 2"),
        (["--prompt-ids", "5", "--thinking-budget", "3"], "needs a tokenizer"),
        (["--prompt-ids", "5", "--mode", "diffusion", "--mask-token", "<nope>"], "is not a token"),
    ],
)
def test_bad_input_is_one_clear_line(capsys, nld_tiny_dir, argv, message):
    import torch

    if "--device" in argv and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    try:
        code = main(["generate", "--model", str(nld_tiny_dir), *argv])
    except SystemExit as exit_:  # argparse type errors
        code = exit_.code
    _, err = capsys.readouterr()
    assert code == 2
    last = err.strip().splitlines()[-1]  # argparse prints its usage first; the error is the last line
    assert "error" in last and "Traceback" not in err
    if message:
        assert message in last


def test_missing_model_path(capsys, tmp_path):
    code, _, err = run(capsys, "generate", "--model", str(tmp_path / "nope"), "--prompt-ids", "5")
    assert code == 2 and "does not exist" in err


def test_info(capsys, nld_tiny_dir):
    code, out, _ = run(capsys, "info", "--model", str(nld_tiny_dir))
    info = json.loads(out)
    assert code == 0 and info["format"] == "nld" and info["adapters"] == ["linear_spec"]


@pytest.mark.parametrize(
    "mode, extra, golden_key, case_id",
    [
        ("diffusion", ["--threshold", "none"], "generate", "gen/p17/bl8/thrNone"),
        ("diffusion", [], "generate", "gen/p40/bl32/thr0.9"),
        ("linear-spec", [], "linear_spec_generate", "ls/p5/bl8/lora"),
        ("linear-spec", ["--no-adapter"], "linear_spec_generate", "ls/p5/bl8/nolora"),
        ("quadratic-spec", [], "quadratic_self_spec", "quad/p17/bl16"),
    ],
)
def test_modes_through_the_cli(capsys, nld_tiny_dir, golden, mode, extra, golden_key, case_id):
    case = next(c for c in golden[golden_key] if c["id"] == case_id)
    block = str(case["call"]["block_length"])
    prompt = ",".join(map(str, golden["prompts"][case["prompt"]]))
    code, out, _ = run(capsys, "generate", "--model", str(nld_tiny_dir), "--mode", mode, "--prompt-ids", prompt,
                       "--block-size", block, "--max-new-tokens", "64", "--json", *extra)
    assert code == 0
    report = last_json(out)
    assert report["mode"] == mode and report["token_ids"] == case["new_tokens"][:64]
    assert report["tokens_per_forward"] == pytest.approx(len(report["token_ids"]) / report["nfe"])
    if mode == "diffusion":
        assert report["nfe"] == case["nfe"] and len(report["block_steps"]) == 64 // int(block)
    else:
        assert report["accepted_lengths"][: len(case["accepted_per_cycle"])] == [
            a for a in case["accepted_per_cycle"] if isinstance(a, int)
        ][: len(report["accepted_lengths"])]


def test_mask_token_by_id_overrides_the_config(capsys, nld_tiny_dir):
    """--mask-token 101 replaces the config's mask id 100: blocks are fed another id (so the output
    changes) and 101 is never emitted."""
    args = ("generate", "--model", str(nld_tiny_dir), "--mode", "diffusion", "--prompt-ids", "70,412,443,268,448",
            "--block-size", "8", "--max-new-tokens", "32", "--json")
    default = last_json(run(capsys, *args)[1])["token_ids"]
    code, out, _ = run(capsys, *args, "--mask-token", "101")
    overridden = last_json(out)["token_ids"]
    assert code == 0 and overridden != default and 101 not in overridden


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--prompt-ids", "5,6", "--max-new-tokens", "300000"], "--max-new-tokens is 300000"),  # context 262,144
        (["--prompt-ids", "5,6", "--max-new-tokens", "10000000000"], "exceeds the model's context of"),
        (["--prompt-ids", "5", "--mode", "diffusion", "--block-size", "0"], "needs block_size >= 1, got 0"),
        (["--prompt-ids", "5", "--threads", "0"], "--threads must be >= 1"),
    ],
)
def test_budgets_blocks_and_threads_are_checked_before_decoding(capsys, nld_tiny_dir, argv, message):
    code, _, err = run(capsys, "generate", "--model", str(nld_tiny_dir), *argv)
    assert code == 2 and message in err.strip().splitlines()[-1] and "Traceback" not in err


def test_generate_streams_the_text_it_prints_at_the_end(capsys, tmp_path):
    from conftest import tiny_text_checkpoint  # pytest puts tests/ on sys.path

    folder = str(tiny_text_checkpoint(tmp_path))
    args = ("generate", "--model", folder, "--prompt", "ab", "--max-new-tokens", "24", "--stop", "zz")
    streamed = run(capsys, *args)
    ended = run(capsys, *args, "--no-stream")
    report = last_json(run(capsys, *args, "--json")[1])
    assert streamed[0] == ended[0] == 0
    assert streamed[1] == ended[1] == report["text"] + "\n"
    assert "loading" in streamed[2] and "tok/fwd" in streamed[2]


def test_the_help_names_every_command_accurately(capsys):
    from trimode.cli import COMMANDS

    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    for name in COMMANDS:
        assert f"\n    {name} " in out or f"\n    {name}\n" in out, name
    assert "extra" not in out  # serving needs nothing beyond the first install


@pytest.mark.parametrize("mode", ["ar", "linear-spec", "quadratic-spec", "diffusion"])
@pytest.mark.parametrize("flags", [["--temperature", "1e-40"], ["--temperature", "0.7", "--top-p", "1e-300"]])
def test_extreme_sampling_settings_decode_instead_of_a_traceback(capsys, nld_tiny_dir, mode, flags):
    # 1/T overflowed (NaN probabilities) and a top_p under float32's resolution dropped every token.
    code, out, err = run(capsys, "generate", "--model", str(nld_tiny_dir), "--mode", mode, "--prompt-ids", "70,412",
                         "--max-new-tokens", "4", "--json", *flags)
    assert code == 0 and "Traceback" not in err and len(last_json(out)["token_ids"]) >= 1
    assert run(capsys, "generate", "--model", str(nld_tiny_dir), "--mode", mode, "--prompt-ids", "70,412",
               "--block-size", "33" if mode == "quadratic-spec" else "4", "--max-new-tokens", "4")[0] == (
        2 if mode == "quadratic-spec" else 0)
