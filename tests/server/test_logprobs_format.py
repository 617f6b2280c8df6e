"""Token texts, bytes and offsets of the logprobs objects: a byte-level vocabulary shows a token
holding part of a UTF-8 character as ``bytes:\\x..`` and counts offsets in decoded characters."""

from __future__ import annotations

import tokenizers
from tokenizers import decoders, models, pre_tokenizers

from trimode.decoding.score import TokenScores
from trimode.server.logprobs import (
    TokenText,
    _byte_decoder,
    completion_logprobs,
    reported,
)
from trimode.tokenizer import Tokenizer


def byte_tokenizer() -> Tokenizer:
    """Byte-level BPE with one token per byte (GPT-2's byte -> character table), plus <eos>."""
    table = {b: c for c, b in _byte_decoder().items()}
    vocab = {table[b]: b for b in range(256)}
    backend = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(["<eos>"])
    return Tokenizer(backend, eos_token="<eos>")


def test_the_byte_table_is_gpt2s():
    table = _byte_decoder()
    assert len(table) == 256 and sorted(table.values()) == list(range(256))
    assert table["Ġ"] == 32 and table["Ċ"] == 10 and table["a"] == 97


def test_split_characters_show_their_bytes_and_offsets_count_characters():
    tok = byte_tokenizer()
    ids = tok.encode("aé b")
    assert len(ids) == 5  # a, 0xc3, 0xa9, space, b
    texts = TokenText(tok)
    assert texts.byte_level
    assert [texts.text(t) for t in ids] == ["a", "bytes:\\xc3", "bytes:\\xa9", " ", "b"]
    assert b"".join(texts.bytes(t) for t in ids) == "aé b".encode()
    assert texts.offsets(ids) == [0, 1, 1, 2, 3]  # the second byte of é starts where é does
    eos = tok.backend.token_to_id("<eos>")
    assert texts.text(eos) == "<eos>"


def test_without_a_tokenizer_tokens_are_named_by_id():
    texts = TokenText(None)
    assert texts.text(7) == "token_id:7" and texts.offsets([7, 8]) == [0, len("token_id:7")]


def test_a_stop_string_cut_drops_the_tokens_after_it():
    tok = byte_tokenizer()
    prompt, completion = tok.encode("Q:"), tok.encode("ab|cd")
    scores = TokenScores(prompt + completion, 0, [None] + [-1.0] * 6, [[]] + [[(97, -0.5)]] * 6)
    texts = TokenText(tok)
    assert reported(scores, texts, len(prompt), None) == 7  # no cut: every token (an EOS would be one)
    assert reported(scores, texts, len(prompt), stop_at=2) == 4  # "Q:" + "ab"; "|cd" is after the cut
    lp = completion_logprobs(scores, texts, 4)
    assert lp["tokens"] == ["Q", ":", "a", "b"] and lp["text_offset"] == [0, 1, 2, 3]
    assert lp["top_logprobs"][0] is None and lp["top_logprobs"][1] == {"a": -0.5, ":": -1.0}
