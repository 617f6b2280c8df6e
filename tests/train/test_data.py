"""Training data: documents, chat loss masks (SmolLM2's template and a tiny BPE one), packing, errors."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from trimode.tokenizer import Tokenizer
from trimode.train.data import DataConfig, DataError, build_dataset
from trimode.train.data_tokens import TokenizerView

# Zephyr's template: every turn (user ones too) ends with the EOS, and the generation prompt has no
# trailing newline, so the "\n" after <|assistant|> is part of what the model generates.
ZEPHYR = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '<|user|>\n' + message['content'] + eos_token }}"
    "{% elif message['role'] == 'system' %}{{ '<|system|>\n' + message['content'] + eos_token }}"
    "{% elif message['role'] == 'assistant' %}{{ '<|assistant|>\n' + message['content'] + eos_token }}"
    "{% endif %}{% if loop.last and add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}{% endfor %}"
)
CORPUS = ["hello there how are you", "the quick brown fox jumps over the lazy dog", "def f(x):\n    return x + 1\n"]


def tiny_tokenizer(template: str | None = ZEPHYR, eos: str = "</s>") -> Tokenizer:
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models, pre_tokenizers, trainers

    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<s>", "</s>", "<|user|>", "<|assistant|>", "<|system|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    backend.train_from_iterator(CORPUS * 5, trainer)
    return Tokenizer(backend, bos_token="<s>", eos_token=eos, chat_template=template)


@pytest.fixture(scope="module")
def smollm2_tokenizer(smollm2):
    return smollm2.tokenizer  # the session's SmolLM2 load (tests/conftest.py); only read here


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def trained(tok, ids, mask) -> str:
    return tok.decode([int(i) for i, m in zip(ids, mask) if m])


# ----------------------------------------------------------------- documents and packing
def test_text_documents_end_in_eos_are_fully_trained_and_packed_in_file_order(tmp_path):
    tok = tiny_tokenizer()
    (tmp_path / "b.txt").write_text("the lazy dog")
    (tmp_path / "a.txt").write_text("hello there")
    ds = build_dataset(DataConfig((str(tmp_path),), seq_len=3), tok)
    a, b, eos = tok.encode("hello there"), tok.encode("the lazy dog"), tok.backend.token_to_id("</s>")
    stream = a + [eos] + b + [eos]
    n = len(stream) // 3
    assert len(ds) == n
    assert torch.equal(torch.stack([ds[i]["input_ids"] for i in range(n)]).flatten(), torch.tensor(stream[: 3 * n]))
    assert ds[0]["input_ids"].dtype == torch.long and ds[0]["loss_mask"].dtype == torch.bool
    assert all(bool(ds[i]["loss_mask"].all()) for i in range(n))
    s = ds.summary
    assert (s["documents"], s["tokens"], s["sequences"]) == (2, len(stream), n)
    assert s["dropped_tokens"] == len(stream) - 3 * n and s["trained_tokens"] == 3 * n
    assert s["sources"][str(tmp_path)]["kinds"] == {"text": 2}


def test_directory_walk_is_sorted_recursive_and_filtered(tmp_path):
    tok = tiny_tokenizer()
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "__pycache__").mkdir()
    (tmp_path / ".git").mkdir()
    (tmp_path / "pkg" / "sub" / "z.py").write_text("def f(x):\n    return x\n")
    (tmp_path / "pkg" / "a.py").write_text("return x + 1")
    (tmp_path / "pkg" / "__pycache__" / "a.py").write_text("the dog")
    (tmp_path / ".git" / "x.txt").write_text("the fox")
    (tmp_path / "notes.csv").write_text("fox,dog")  # unknown suffix inside a directory: skipped
    (tmp_path / "blob.txt").write_bytes(b"\xff\xfe\x00bad")  # not UTF-8 inside a directory: skipped
    write_jsonl(tmp_path / "pkg" / "d.jsonl", [{"text": "hello"}])
    ds = build_dataset(DataConfig((str(tmp_path),), seq_len=2), tok)
    src = ds.summary["sources"][str(tmp_path)]
    assert src["kinds"] == {"code": 2, "text": 1} and src["skipped_files"] == 2 and src["files"] == 3
    eos = tok.backend.token_to_id("</s>")
    expected = tok.encode("return x + 1") + [eos] + tok.encode("hello") + [eos] + tok.encode("def f(x):\n    return x\n") + [eos]
    got = torch.stack([ds[i]["input_ids"] for i in range(len(ds))]).flatten().tolist()
    assert got == expected[: len(got)] and len(expected) - len(got) < 2

    capped = build_dataset(DataConfig((str(tmp_path),), seq_len=2, max_files=3), tok)  # blob, a.py, d.jsonl
    assert capped.summary["sources"][str(tmp_path)]["kinds"] == {"code": 1, "text": 1}
    assert capped.summary["sources"][str(tmp_path)]["skipped_files"] == 3


def test_explicit_file_of_any_suffix_is_text(tmp_path):
    tok = tiny_tokenizer()
    path = tmp_path / "data.csv"
    path.write_text("the quick brown fox")
    ds = build_dataset(DataConfig((str(path),), seq_len=2), tok)
    assert ds.summary["sources"][str(path)]["kinds"] == {"text": 1}
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(DataError, match=r"bad.txt: not UTF-8"):
        build_dataset(DataConfig((str(bad),), seq_len=2), tok)


def test_jsonl_kinds_and_prompt_completion_mask(tmp_path):
    tok = tiny_tokenizer()
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "hello there"}, {"prompt": "how are", "completion": " you"}])
    ds = build_dataset(DataConfig((str(path),), seq_len=2), tok)
    eos = tok.backend.token_to_id("</s>")
    text, prompt, answer = tok.encode("hello there") + [eos], tok.encode("how are"), tok.encode(" you") + [eos]
    ids, mask = text + prompt + answer, [True] * len(text) + [False] * len(prompt) + [True] * len(answer)
    n = ds.summary["packed_tokens"]
    assert ds.input_ids.flatten().tolist() == ids[:n] and ds.loss_mask.flatten().tolist() == mask[:n]
    assert len(ids) - n < 2
    assert ds.summary["sources"][str(path)]["kinds"] == {"text": 1, "prompt-completion": 1}


def test_builds_are_deterministic(tmp_path):
    tok = tiny_tokenizer()
    write_jsonl(tmp_path / "d.jsonl", [{"text": w} for w in CORPUS * 3])
    one, two = (build_dataset(DataConfig((str(tmp_path),), seq_len=4), tok) for _ in range(2))
    assert torch.equal(one.input_ids, two.input_ids) and torch.equal(one.loss_mask, two.loss_mask)
    assert one.summary == two.summary


# ----------------------------------------------------------------- chat loss masks
CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello there"},
    {"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "4"},
]


def test_smollm2_chat_mask_covers_answers_and_their_end_token_only(smollm2_tokenizer):
    tok = smollm2_tokenizer
    doc = TokenizerView(tok).chat(CONVERSATION)
    assert trained(tok, doc.ids, doc.mask) == "Hello there<|im_end|>4<|im_end|>"
    runs, start = [], None
    for i, m in enumerate(doc.mask + [False]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            runs.append((start, i))
            start = None
    assert [tok.decode(doc.ids[a:b]) for a, b in runs] == ["Hello there<|im_end|>", "4<|im_end|>"]
    assert all(tok.decode(doc.ids[:a]).endswith("<|im_start|>assistant\n") for a, _ in runs)
    assert tok.decode(doc.ids) == tok.render_chat(CONVERSATION, add_generation_prompt=False)[:-1]  # "\n" cut
    assert doc.ids[-1] == 2 and doc.mask[-1]  # ends with the answer's <|im_end|> (the EOS), trained


def test_smollm2_default_system_prompt_is_never_trained(smollm2_tokenizer, tmp_path):
    tok = smollm2_tokenizer
    messages = [{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris."}]
    path = write_jsonl(tmp_path / "sft.jsonl", [{"messages": messages}] * 4)
    ds = build_dataset(DataConfig((str(path),), seq_len=16), tok)
    ids = torch.cat([ds[i]["input_ids"] for i in range(len(ds))]).tolist()
    mask = torch.cat([ds[i]["loss_mask"] for i in range(len(ds))]).tolist()
    full = tok.encode_chat(messages, add_generation_prompt=False)[:-1]  # without the "\n" after <|im_end|>
    assert ids == (full * 4)[: len(ids)]
    assert trained(tok, ids, mask).startswith("Paris.<|im_end|>Paris.<|im_end|>")
    assert "SmolLM" in tok.decode(full) and "SmolLM" not in trained(tok, ids, mask)
    assert ds.summary["chat_template"] is True


def test_tiny_zephyr_mask_is_exactly_what_follows_the_generation_prompt():
    tok = tiny_tokenizer()
    doc = TokenizerView(tok).chat(CONVERSATION)
    # The generation prompt is "<|assistant|>" alone, so the model itself writes the "\n".
    assert trained(tok, doc.ids, doc.mask) == "\nHello there</s>\n4</s>"
    eos = tok.backend.token_to_id("</s>")
    assert doc.ids.count(eos) == 5  # system, user, answer, user, answer: only the answers' are trained
    assert sum(1 for t, m in zip(doc.ids, doc.mask) if t == eos and m) == 2


def test_final_answer_rendered_differently_qwen3_style():
    """Qwen3's template gives only a final answer an (empty) think block, so a non-final answer
    rendered as the last message does not match the full conversation; the EOS still ends it."""
    template = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' }}"
        "{% if m['role'] == 'assistant' and loop.last %}{{ '<think>\n\n</think>\n\n' }}{% endif %}"
        "{{ m['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    tok = tiny_tokenizer(template, eos="<|im_end|>")
    doc = TokenizerView(tok).chat(CONVERSATION)
    assert trained(tok, doc.ids, doc.mask) == "Hello there<|im_end|><think>\n\n</think>\n\n4<|im_end|>"


def test_template_without_end_tokens_gets_an_untrained_eos():
    plain = "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}" \
            "{% if add_generation_prompt %}{{ 'assistant:' }}{% endif %}"
    tok = tiny_tokenizer(plain)
    doc = TokenizerView(tok).chat([{"role": "user", "content": "hello"}, {"role": "assistant", "content": "fine"}])
    assert trained(tok, doc.ids, doc.mask) == " fine\n"
    assert doc.ids[-1] == tok.backend.token_to_id("</s>") and not doc.mask[-1]


WORDS = ["hello", "there", "the", "fox", "x + 1", "dog", "return", "how", "\n", "ok?"]


def random_conversation(rng: random.Random) -> list[dict[str, str]]:
    def text() -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6)))

    system = [{"role": "system", "content": text()}] if rng.random() < 0.5 else []
    turns = [m for _ in range(rng.randint(1, 4)) for m in ({"role": "user", "content": text()},
                                                            {"role": "assistant", "content": text()})]
    return system + turns


@pytest.mark.parametrize("seed", range(30))
def test_tiny_chat_mask_property(seed):
    """Each answer's trained run is exactly the tokens that follow the generation prompt of its
    prefix, through its EOS; nothing else is trained."""
    tok = tiny_tokenizer()
    messages = random_conversation(random.Random(seed))
    doc = TokenizerView(tok).chat(messages)
    expected = []
    for k, m in enumerate(messages):
        if m["role"] == "assistant":
            start = len(tok.encode_chat(messages[:k], add_generation_prompt=True))
            turn = tok.encode_chat(messages[: k + 1], add_generation_prompt=False)
            assert turn[:start] == doc.ids[:start]
            expected.extend(range(start, len(turn)))
    assert [i for i, m in enumerate(doc.mask) if m] == expected
    assert tok.decode([t for t, m in zip(doc.ids, doc.mask) if m]) == "".join(
        "\n" + m["content"] + "</s>" for m in messages if m["role"] == "assistant"
    )


def test_chat_modes_without_template(tmp_path):
    tok = tiny_tokenizer(template=None)
    path = write_jsonl(tmp_path / "c.jsonl", [{"messages": CONVERSATION}] * 3)
    auto = build_dataset(DataConfig((str(path),), seq_len=4), tok)
    assert auto.summary["chat_template"] is False and auto.summary["sources"][str(path)]["kinds"] == {"chat-text": 3}
    assert bool(auto.loss_mask.all())
    with pytest.raises(DataError, match="no chat template"):
        build_dataset(DataConfig((str(path),), seq_len=4, chat=True), tok)
    templated = build_dataset(DataConfig((str(path),), seq_len=4, chat=False), tiny_tokenizer())
    assert templated.summary["chat_template"] is False and bool(templated.loss_mask.all())


def test_pre_tokenized_records_need_no_tokenizer(tmp_path):
    path = write_jsonl(tmp_path / "ids.jsonl", [{"input_ids": [5, 6, 7], "loss_mask": [0, 1, 1]}, {"input_ids": [8, 9, 11]}])
    ds = build_dataset(DataConfig((str(path),), seq_len=3), None)
    assert ds.input_ids.tolist() == [[5, 6, 7], [8, 9, 11]]  # verbatim: no EOS added
    assert ds.loss_mask.tolist() == [[False, True, True], [True, True, True]]
    (tmp_path / "t.txt").write_text("hello")
    with pytest.raises(DataError, match=r"t.txt: text needs a tokenizer, and none was given"):
        build_dataset(DataConfig((str(tmp_path),), seq_len=3), None)
    write_jsonl(path, [{"input_ids": [1, 2], "loss_mask": [True]}])
    with pytest.raises(DataError, match=r"ids.jsonl:1: 'loss_mask' must be a list of 2 booleans"):
        build_dataset(DataConfig((str(path),), seq_len=2), None)
    write_jsonl(path, [{"input_ids": [1, "a"]}])
    with pytest.raises(DataError, match=r"ids.jsonl:1: 'input_ids' must be a non-empty list of token ids"):
        build_dataset(DataConfig((str(path),), seq_len=2), None)


# ----------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "line, message",
    [
        ('{"text": "ok"', r"d.jsonl:2: invalid JSON"),
        ('["text"]', r"d.jsonl:2: expected a JSON object, got list"),
        ('{"txt": "x"}', r"d.jsonl:2: expected a 'text', 'messages', 'prompt'\+'completion' or 'input_ids' key, got keys \['txt'\]"),
        ('{"text": 3}', r"d.jsonl:2: 'text' must be a string"),
        ('{"messages": []}', r"d.jsonl:2: 'messages' must be a non-empty list"),
        ('{"messages": [{"role": "user"}]}', r"d.jsonl:2: message 0 must be an object with string 'role' and 'content'"),
        ('{"prompt": 1, "completion": "x"}', r"d.jsonl:2: 'prompt' and 'completion' must be strings"),
    ],
)
def test_bad_jsonl_line_names_file_line_and_expectation(tmp_path, line, message):
    (tmp_path / "d.jsonl").write_text('{"text": "hello there"}\n' + line + "\n")
    with pytest.raises(DataError, match=message):
        build_dataset(DataConfig((str(tmp_path / "d.jsonl"),), seq_len=2), tiny_tokenizer())


def test_too_little_data_says_where_and_seq_len(tmp_path):
    (tmp_path / "a.txt").write_text("hello")
    with pytest.raises(DataError, match=rf"tokens in 1 documents from \['{tmp_path}'\]: fewer than seq_len=512"):
        build_dataset(DataConfig((str(tmp_path),), seq_len=512), tiny_tokenizer())
    (tmp_path / "a.txt").unlink()
    (tmp_path / "x.csv").write_text("hello")
    with pytest.raises(DataError, match="no data files in"):
        build_dataset(DataConfig((str(tmp_path),), seq_len=2), tiny_tokenizer())
    with pytest.raises(FileNotFoundError, match="nope does not exist"):
        build_dataset(DataConfig((str(tmp_path / "nope"),), seq_len=2), tiny_tokenizer())


def test_tokenizer_requirements():
    with pytest.raises(ValueError, match="tokenizer is None"):
        TokenizerView(None)

    class NoEos:
        def encode(self, text):
            return [1, 2]

    with pytest.raises(ValueError, match="has no EOS token"):
        TokenizerView(NoEos())

    class Minimal:  # the duck-typed minimum: encode + eos_token_id
        eos_token_id = 0

        def encode(self, text):
            return [len(w) + 1 for w in text.split()]

    assert TokenizerView(Minimal()).text("ab c").ids == [3, 2, 0]
