"""Tokenizer files other tools load: transformers' AutoTokenizer on the shipped default model's
folder, on an exported checkpoint and on a saved delta gives trimode's ids, text and chat prompt."""

from __future__ import annotations

import pytest
import tokenizers
from conftest import tiny_text_checkpoint  # pytest puts tests/ on sys.path
from tokenizers import decoders, models

from trimode.model import load
from trimode.model.defaults import SHIPPED_DELTA, shipped_delta
from trimode.tokenizer import Tokenizer

transformers = pytest.importorskip("transformers")

TRICKY = [
    "Hello world", "  two leading spaces", "tabs\tand\nnewlines\r\n", "émojis 🤖🚀 and ünïcödé", "中文字符和日本語",
    "<|im_start|>user\nhi<|im_end|>", "def f(x):\n    return x**2  # ok", "", " ", "a" * 300,
    "0123456789 3.14159 1e-10", "<empty_output> mask", "\u200b zero width", "```python\nprint('x')\n```",
    "trailing space ", "don't can't won't", "\u00a0non-breaking", "<s></s><unk>",
]
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}]


def assert_same(ours: Tokenizer, folder) -> None:
    hf = transformers.AutoTokenizer.from_pretrained(str(folder))
    for text in TRICKY:
        ids = ours.encode(text)
        assert hf(text)["input_ids"] == ids, text
        assert hf.encode(text, add_special_tokens=False) == ours.encode(text, add_special_tokens=False), text
        assert hf.decode(ids) == ours.decode(ids), text
        assert hf.decode(ids, skip_special_tokens=True) == ours.decode(ids, skip_special_tokens=True), text
    assert hf.eos_token == ours.eos_token and hf.bos_token == ours.bos_token
    if ours.chat_template:
        assert hf.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False) == ours.render_chat(CHAT)


@pytest.mark.slow
def test_the_default_model_folder_has_a_tokenizer_autotokenizer_reads_the_same(default_model):
    if shipped_delta() is None:
        pytest.skip("no delta shipped in trimode/default_model/")
    assert (SHIPPED_DELTA / "tokenizer.json").is_file() and (SHIPPED_DELTA / "chat_template.jinja").is_file()
    assert_same(default_model.tokenizer, SHIPPED_DELTA)


def test_an_export_and_a_delta_carry_the_tokenizer(tmp_path):
    from trimode.model.delta import save_delta
    from trimode.train.export import export_nld

    loaded = load(tiny_text_checkpoint(tmp_path))
    exported = export_nld(loaded.model, tmp_path / "nld", tokenizer=loaded.tokenizer)
    assert_same(loaded.tokenizer, exported)
    delta = save_delta(loaded.model, tmp_path / "delta", loaded.source, [3], tokenizer=loaded.tokenizer)
    assert_same(loaded.tokenizer, delta)


def test_a_bos_this_class_adds_is_written_for_other_tools(tmp_path):
    vocab = {"<bos>": 0, "<eos>": 1, **{chr(c): i + 2 for i, c in enumerate(range(97, 123))}}
    backend = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None))
    backend.add_special_tokens(["<bos>", "<eos>"])
    backend.decoder = decoders.Fuse()
    ours = Tokenizer(backend, bos_token="<bos>", eos_token="<eos>", add_bos_token=True)  # as a GGUF flag asks
    assert ours.encode("abc") == [0, 2, 3, 4]
    ours.save(tmp_path)
    assert_same(ours, tmp_path)
    again = Tokenizer.from_folder(tmp_path)
    assert again.encode("abc") == [0, 2, 3, 4]  # the BOS once, not twice
