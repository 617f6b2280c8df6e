"""trimode.tokenizer: special ids (BOS added once, EOS ids merged), chat templates rendered like
transformers (trim/lstrip blocks, tojson, raise_exception, sandboxed), loading and saving folders."""

from __future__ import annotations

import json

import pytest
import tokenizers
from conftest import TINY_CHAT_TEMPLATE  # pytest puts tests/ on sys.path
from jinja2.exceptions import SecurityError, TemplateError
from tokenizers import Regex, decoders, models, pre_tokenizers

from trimode.tokenizer import Tokenizer

SPECIALS = ["<unk>", "<s>", "</s>"]
CHARS = ["\n"] + [chr(c) for c in range(32, 127)]
VOCAB = {**{s: i for i, s in enumerate(SPECIALS)}, **{c: i + len(SPECIALS) for i, c in enumerate(CHARS)}}
USER_HI = [{"role": "user", "content": "hi"}]


def char_backend() -> tokenizers.Tokenizer:
    """One token per character (ids: the specials 0-2, then "\\n" = 3, " " = 4, "!" = 5, ...)."""
    backend = tokenizers.Tokenizer(models.WordLevel(VOCAB, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens(SPECIALS)
    return backend


def ids(text: str) -> list[int]:
    return [VOCAB[c] for c in text]


def test_encode_and_decode_with_specials():
    tok = Tokenizer(char_backend())
    assert tok.vocab_size == 3 + 96
    assert ids("hi!") == [76, 77, 5]  # printable character c has id ord(c) - 28: "h" 104 -> 76, "!" 33 -> 5
    assert tok.encode("hi!") == [76, 77, 5]
    assert tok.encode("<s>hi</s>") == [1, 76, 77, 2]
    assert tok.decode([1, 76, 77, 2]) == "<s>hi</s>"
    assert tok.decode([1, 76, 77, 2], skip_special_tokens=True) == "hi"


def test_bos_is_added_once_and_only_with_special_tokens():
    tok = Tokenizer(char_backend(), bos_token="<s>", add_bos_token=True)
    assert tok.bos_token_id == 1
    assert tok.encode("hi") == [1, 76, 77]
    assert tok.encode("<s>hi") == [1, 76, 77]  # already there: not doubled
    assert tok.encode("hi", add_special_tokens=False) == [76, 77]
    assert tok.encode("") == [1]
    assert Tokenizer(char_backend(), bos_token="<s>").encode("hi") == [76, 77]  # the flag is off by default


def test_eos_token_joins_the_given_eos_ids_once():
    assert Tokenizer(char_backend(), eos_token="</s>", eos_token_ids=(7,)).eos_token_ids == (7, 2)
    assert Tokenizer(char_backend(), eos_token="</s>", eos_token_ids=(2, 7)).eos_token_ids == (2, 7)
    assert Tokenizer(char_backend(), eos_token="<eot>").eos_token_ids == ()  # not in the vocabulary


def test_chat_template_rendering_and_encoding():
    tok = Tokenizer(char_backend(), bos_token="<s>", add_bos_token=True, chat_template=TINY_CHAT_TEMPLATE)
    assert tok.render_chat(USER_HI) == "<user>hi\n<assistant>"
    assert tok.render_chat(USER_HI, add_generation_prompt=False) == "<user>hi\n"
    # The rendered text is encoded without added specials: a template that wants a BOS writes it.
    assert tok.encode_chat(USER_HI) == ids("<user>hi\n<assistant>")


def test_template_environment_matches_transformers():
    template = ("{{ bos_token }}{% for m in messages %}\n    {% if m['role'] == 'user' %}\n"
                "{{ m['role'] }}:{{ m['content'] | tojson }}{{ extra }}\n    {% endif %}\n{% endfor %}")
    tok = Tokenizer(char_backend(), bos_token="<s>", chat_template=template, extra_template_vars={"extra": "?"})
    # trim_blocks drops the newline after a tag, lstrip_blocks the indentation before one; tojson
    # keeps non-ASCII characters; template variables come from the tokenizer and the call.
    messages = [{"role": "user", "content": "é"}, {"role": "system", "content": "x"}]
    assert tok.render_chat(messages) == '<s>user:"é"?\n'
    assert tok.render_chat(messages, extra="!") == '<s>user:"é"!\n'


def test_template_errors():
    tok = Tokenizer(char_backend(), chat_template="{{ raise_exception('only user messages') }}")
    with pytest.raises(TemplateError, match="only user messages"):
        tok.render_chat(USER_HI)
    sandboxed = Tokenizer(char_backend(), chat_template="{{ messages.append(1) }}")
    with pytest.raises(SecurityError):
        sandboxed.render_chat(USER_HI)  # templates cannot change what they are given
    with pytest.raises(ValueError, match="no chat template"):
        Tokenizer(char_backend()).render_chat(USER_HI)
    with pytest.raises(ValueError, match="message 1 must be a dict with 'role' and 'content'"):
        Tokenizer(char_backend(), chat_template=TINY_CHAT_TEMPLATE).render_chat([USER_HI[0], {"role": "user"}])


def test_from_folder_reads_the_config_and_the_template_files(tmp_path):
    char_backend().save(str(tmp_path / "tokenizer.json"))
    config = {"bos_token": {"content": "<s>", "lstrip": False}, "eos_token": "</s>", "add_bos_token": True,
              "chat_template": [{"name": "tool_use", "template": "TOOLS"}, {"name": "default", "template": "PLAIN"}]}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    tok = Tokenizer.from_folder(tmp_path, eos_token_ids=(9,))
    assert (tok.bos_token, tok.bos_token_id, tok.eos_token, tok.eos_token_ids) == ("<s>", 1, "</s>", (9, 2))
    assert tok.add_bos_token and tok.chat_template == "PLAIN" and tok.encode("a") == [1, 69]
    (tmp_path / "chat_template.json").write_text(json.dumps({"chat_template": "FROM JSON"}))
    assert Tokenizer.from_folder(tmp_path).chat_template == "FROM JSON"
    (tmp_path / "chat_template.jinja").write_text("FROM JINJA")
    assert Tokenizer.from_folder(tmp_path).chat_template == "FROM JINJA"  # the .jinja file wins
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        Tokenizer.from_folder(tmp_path / "missing")


def test_save_then_load_gives_the_same_tokenizer(tmp_path):
    tok = Tokenizer(char_backend(), bos_token="<s>", eos_token="</s>", add_bos_token=True,
                    chat_template=TINY_CHAT_TEMPLATE)
    tok.save(tmp_path / "tok")
    again = Tokenizer.from_folder(tmp_path / "tok")
    assert (again.bos_token_id, again.eos_token_ids, again.add_bos_token) == (1, (2,), True)
    assert again.chat_template == TINY_CHAT_TEMPLATE
    assert again.encode("hi") == tok.encode("hi") == [1, 76, 77]
    # The BOS is written into the saved post-processor, which adds it always, as transformers does:
    # only a text that already starts with the BOS string gets a second one after the round trip.
    assert tok.encode("<s>hi") == [1, 76, 77] and again.encode("<s>hi") == [1, 1, 76, 77]
    assert again.encode_chat(USER_HI) == tok.encode_chat(USER_HI)
