"""``trimode distill-data`` end to end on SmolLM2: the model's own answers, batch-independent, loadable as SFT data."""

from __future__ import annotations

import json
import re

import pytest

from trimode.cli import main
from trimode.decoding import decoder_for
from trimode.decoding.base import GenerationConfig
from trimode.sampling import SamplingParams
from trimode.train.data import DataConfig, build_dataset
from trimode.train.distill import Prompt, answers, read_prompts

PROMPTS = ["What is the capital of France?", "Name a color.", "Write one word."]


def test_tokenizerless_checkpoint_with_prompt_ids_reproduces_the_golden_answers(tmp_path, nld_tiny_dir, golden):
    """nld-tiny has no tokenizer: prompt ids in, ids + loss mask out; greedy answers equal the
    publisher's reference AR outputs, decoded here in a ragged batch."""
    names = ["p5", "peos", "p17", "p40"]
    prompts = tmp_path / "ids.jsonl"
    prompts.write_text("".join(json.dumps({"prompt_ids": golden["prompts"][n]}) + "\n" for n in names))
    out = tmp_path / "out.jsonl"
    code = main(["distill-data", "--model", str(nld_tiny_dir), "--prompts", str(prompts), "--output", str(out),
                 "--max-new-tokens", "20", "--batch-size", "3"])
    assert code == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    cases = {c["id"]: c for c in golden["ar_generate"]}
    for name, rec in zip(names, records):
        prompt, new = golden["prompts"][name], cases[f"ar/{name}"]["new_tokens"][:20]  # peos: 18, EOS last
        assert rec["input_ids"] == prompt + new
        assert rec["loss_mask"] == [False] * len(prompt) + [True] * len(new)
        assert (rec["prompt_tokens"], rec["answer_tokens"]) == (len(prompt), len(new))
        assert rec["finish_reason"] == ("eos" if name == "peos" else "length")
    ds = build_dataset(DataConfig((str(out),), seq_len=16), None)
    stream = [t for r in records for t in r["input_ids"]]
    assert ds.input_ids.flatten().tolist() == stream[: ds.summary["packed_tokens"]]
    assert ds.summary["sources"][str(out)]["kinds"] == {"ids": 4}


def test_prompts_a_tokenizerless_checkpoint_cannot_take(tmp_path, nld_tiny_dir, capsys):
    prompts, out = tmp_path / "p.jsonl", tmp_path / "out.jsonl"
    for line, message in [({"prompt": "hello"}, "has no tokenizer: give the prompts as JSONL"),
                          ({"prompt_ids": [5, 512]}, r"p.jsonl:1: prompt token ids must be below the vocabulary size 512")]:
        prompts.write_text(json.dumps(line) + "\n")
        code = main(["distill-data", "--model", str(nld_tiny_dir), "--prompts", str(prompts), "--output", str(out)])
        assert code == 2 and re.search(message, capsys.readouterr().err)
        assert not out.exists() and not (tmp_path / "out.jsonl.tmp").exists()


@pytest.mark.slow  # the command loads the default model; `smollm2` is the session's (tests/conftest.py)
def test_cli_writes_the_models_own_answers_as_sft_data(tmp_path, smollm2, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(PROMPTS[0] + "\n\n" + "\n".join(PROMPTS[1:]) + "\n")  # blank lines are skipped
    out = tmp_path / "out.jsonl"
    code = main(["distill-data", "--prompts", str(prompts), "--output", str(out),
                 "--max-new-tokens", "8", "--batch-size", "2"])
    assert code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl", "prompts.txt"]  # no temporary file left
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 3
    tok, decoder = smollm2.tokenizer, decoder_for("ar", smollm2.model)
    config = GenerationConfig(max_new_tokens=8, eos_token_ids=smollm2.eos_token_ids)
    for prompt, rec in zip(PROMPTS, records):
        user = [{"role": "user", "content": prompt}]
        assert rec["messages"][:1] == user and rec["messages"][1]["role"] == "assistant"
        ids = tok.encode_chat(user)
        alone = decoder.generate([ids], config)  # each prompt decoded on its own, greedy
        assert rec["messages"][1]["content"] == tok.decode(alone.sequences[0], skip_special_tokens=True)
        assert rec["prompt_tokens"] == len(ids) and rec["answer_tokens"] == len(alone.sequences[0]) <= 8
        assert rec["finish_reason"] == alone.finish_reasons[0]
    assert "wrote 3 answers" in capsys.readouterr().err

    ds = build_dataset(DataConfig((str(out),), seq_len=8), tok)
    n = ds.summary["tokens"]
    assert n == sum(len(tok.encode_chat(r["messages"], add_generation_prompt=False)) - 1 for r in records)
    ids = ds.input_ids.flatten().tolist()
    mask = ds.loss_mask.flatten().tolist()
    trained = tok.decode([t for t, m in zip(ids, mask) if m])
    expected = "".join(r["messages"][1]["content"] + "<|im_end|>" for r in records)
    assert expected.startswith(trained) and len(trained) > len(expected) - 40  # only the tail chunk is dropped


@pytest.mark.slow
def test_sampled_answers_do_not_depend_on_the_batch_size(smollm2):
    prompts = [Prompt([{"role": "user", "content": p}], None) for p in PROMPTS]
    sampling = SamplingParams(temperature=1.0, top_p=0.9, seed=11)
    one = list(answers(smollm2, prompts, sampling, 6, batch_size=3))
    two = list(answers(smollm2, prompts, sampling, 6, batch_size=2))
    assert one == two
    other_seed = list(answers(smollm2, prompts, SamplingParams(temperature=1.0, top_p=0.9, seed=12), 6, batch_size=3))
    assert other_seed != one


def test_no_chat_records_are_prompt_completion(tmp_path, smollm2):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "The capital of France is"}) + "\n")
    prompts = read_prompts(path, chat=False)
    (rec,) = answers(smollm2, prompts, SamplingParams(), 5)
    assert rec["prompt"] == "The capital of France is" and rec["answer_tokens"] == 5
    out = tmp_path / "o.jsonl"
    out.write_text(json.dumps(rec) + "\n")
    ds = build_dataset(DataConfig((str(out),), seq_len=4), smollm2.tokenizer)
    assert ds.summary["sources"][str(out)]["kinds"] == {"prompt-completion": 1}
    n_prompt = rec["prompt_tokens"]
    assert not ds.loss_mask.flatten()[:n_prompt].any() and ds.loss_mask.flatten()[n_prompt:].all()


def test_jsonl_prompts_system_and_answer_regeneration(tmp_path):
    path = tmp_path / "p.jsonl"
    lines = [
        {"prompt": "hi"},
        {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "5"}]},
        {"messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "ok?"}]},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    prompts = read_prompts(path, chat=True, system="Be kind.")
    assert [p.messages for p in prompts] == [
        [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "hi"}],
        [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "2+2?"}],  # old answer dropped
        [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "ok?"}],
    ]


@pytest.mark.parametrize(
    "content, flags, message",
    [
        ('{"prompt": "a"}\n{"prompt": 3}\n', [], r"p.jsonl:2: expected an object with a string 'prompt', a 'messages' list or 'prompt_ids'"),
        ('{"prompt": "a"\n', [], r"p.jsonl:1: invalid JSON"),
        ('{"messages": [{"role": "user", "content": "a"}]}\n', ["--no-chat"], r"p.jsonl:1: 'messages' need the chat template"),
        ('\n\n', [], r"p.jsonl has no prompts"),
        ('{"prompt_ids": [1, -2]}\n', [], r"p.jsonl:1: 'prompt_ids' must be a non-empty list of token ids"),
        ('{"prompt_ids": [1, 2]}\n', ["--system", "x"], r"p.jsonl:1: 'prompt_ids' are used verbatim"),
        ('{"prompt": "a"}\n', ["--batch-size", "0"], r"--batch-size must be >= 1"),
    ],
)
def test_bad_prompt_files_fail_before_loading_the_model(tmp_path, capsys, content, flags, message):
    (tmp_path / "p.jsonl").write_text(content)
    out = tmp_path / "out.jsonl"
    out.write_text("previous\n")
    code = main(["distill-data", "--model", str(tmp_path / "no-such-model"), "--prompts", str(tmp_path / "p.jsonl"),
                 "--output", str(out), *flags])
    err = capsys.readouterr().err
    assert code == 2 and re.search(message, err), err
    assert out.read_text() == "previous\n" and not (tmp_path / "out.jsonl.tmp").exists()
