"""Rebuilding a GGUF file's tokenizer (``tokenizer.ggml.*`` metadata) as a ``tokenizers.Tokenizer``.

Byte-level BPE (``gpt2``) vocabularies get the pre-tokenizer named by ``tokenizer.ggml.pre`` the
way llama.cpp applies it; SentencePiece (``llama``) vocabularies become a BPE with byte fallback
whose merges are recovered from the token scores.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
)

from .reader import GGUFError, GGUFFile, require

# tokenizer.ggml.token_type values
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6

# Pre-tokenizer regexes, as published in the models' own tokenizer.json files.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# llama.cpp's tokenizer.ggml.pre names whose vocabularies merge whole words without consulting the
# merges when the word is itself a token (llama.cpp's "ignore_merges").
_IGNORE_MERGES_PRE = frozenset({"llama-bpe", "llama3"})


def _gpt2_byte_level() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


def _split_then_bytes(pattern: str) -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def _byte_level_pre_tokenizer(pre: str | None, path: Path) -> pre_tokenizers.PreTokenizer:
    if pre in (None, "default", "gpt2"):
        return _gpt2_byte_level()
    if pre == "smollm":
        # llama.cpp isolates every numeral (\p{N}), then applies the GPT-2 regex to the rest.
        return pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), _gpt2_byte_level()]
        )
    if pre in ("llama-bpe", "llama3"):
        return _split_then_bytes(_LLAMA3_SPLIT)
    if pre == "qwen2":
        return _split_then_bytes(_QWEN2_SPLIT)
    warnings.warn(
        f"{path}: unknown pre-tokenizer {pre!r} (tokenizer.ggml.pre); splitting text with the "
        "GPT-2 regex instead, which may tokenize some text differently from llama.cpp",
        stacklevel=3,
    )
    return _gpt2_byte_level()


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet: printable Latin-1 bytes stand for themselves, every other byte
    for the next unused code point from 256 up, so that every byte is a visible character."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    mapping = {b: chr(b) for b in printable}
    extra = 256
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(extra)
            extra += 1
    return mapping


def _token_types(gguf: GGUFFile, n_tokens: int) -> np.ndarray:
    types = gguf.metadata.get("tokenizer.ggml.token_type")
    if types is None:
        return np.full(n_tokens, _NORMAL, dtype=np.int32)
    types = np.asarray(types)
    if types.shape != (n_tokens,):
        raise GGUFError(
            f"{gguf.path}: tokenizer.ggml.token_type has {types.size} entries for {n_tokens} tokens"
        )
    return types


def _vocab(tokens: list[str], keys: Iterable[str], path: Path) -> dict[str, int]:
    vocab: dict[str, int] = {}
    for index, key in enumerate(keys):
        if key in vocab:
            warnings.warn(
                f"{path}: token {index} ({tokens[index]!r}) duplicates token {vocab[key]}; "
                "it will never be produced",
                stacklevel=4,
            )
            continue
        vocab[key] = index
    return vocab


def _byte_level_bpe(
    gguf: GGUFFile, tokens: list[str], types: np.ndarray
) -> tuple[Tokenizer, dict[str, int]]:
    alphabet = _bytes_to_unicode()
    spelled = set(alphabet.values())

    def vocab_key(text: str, token_type: int) -> str:
        # Control and user-defined tokens are matched in the raw text, so they keep their raw
        # spelling. A normal token should already be spelled in the byte alphabet; some converters
        # store raw text instead, which we respell so BPE can reach it.
        if token_type in (_CONTROL, _USER_DEFINED) or set(text) <= spelled:
            return text
        return "".join(alphabet[b] for b in text.encode("utf-8"))

    vocab = _vocab(tokens, map(vocab_key, tokens, types.tolist()), gguf.path)
    merges = []
    for i, merge in enumerate(require(gguf, "tokenizer.ggml.merges")):
        parts = merge.split(" ")
        if len(parts) != 2:
            raise GGUFError(f"{gguf.path}: tokenizer merge #{i} {merge!r} is not two tokens")
        merges.append((parts[0], parts[1]))

    pre = gguf.metadata.get("tokenizer.ggml.pre")
    try:
        model = models.BPE(
            vocab=vocab, merges=merges, ignore_merges=pre in _IGNORE_MERGES_PRE, fuse_unk=False
        )
    except Exception as e:  # tokenizers reports bad merges as a plain Exception
        raise GGUFError(
            f"{gguf.path}: the tokenizer's merges do not fit its vocabulary: {e}"
        ) from e
    tokenizer = Tokenizer(model)
    tokenizer.pre_tokenizer = _byte_level_pre_tokenizer(pre, gguf.path)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer, vocab


def _sentencepiece_bpe(
    gguf: GGUFFile, tokens: list[str], types: np.ndarray
) -> tuple[Tokenizer, dict[str, int]]:
    """SentencePiece BPE as llama.cpp runs it: repeatedly merge the adjacent pair whose union is the
    highest-scoring token, fall back to <0xXX> byte tokens, and write spaces as "▁".

    A GGUF keeps no merges for these vocabularies, only per-token scores, so the merge list is
    rebuilt: every way of splitting a token into two tokens is a merge ranked by the score of the
    result.
    """
    scores = np.asarray(require(gguf, "tokenizer.ggml.scores"), dtype=np.float64)
    if scores.shape != (len(tokens),):
        raise GGUFError(f"{gguf.path}: tokenizer.ggml.scores does not match the token list")
    vocab = _vocab(tokens, tokens, gguf.path)
    mergeable = {t for t, tt in zip(tokens, types.tolist()) if tt == _NORMAL}
    ranked = []
    for token, token_type in zip(tokens, types.tolist()):
        if token_type != _NORMAL:
            continue
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in mergeable and right in mergeable:
                ranked.append((-scores[vocab[token]], vocab[left], vocab[right], left, right))
    ranked.sort()
    merges = [(left, right) for *_, left, right in ranked]

    unk_id = gguf.metadata.get("tokenizer.ggml.unknown_token_id")
    unk = tokens[int(unk_id)] if unk_id is not None else None
    tokenizer = Tokenizer(
        models.BPE(vocab=vocab, merges=merges, unk_token=unk, fuse_unk=True, byte_fallback=True)
    )
    add_prefix = bool(gguf.metadata.get("tokenizer.ggml.add_space_prefix", True))
    # The prefix goes in front of every stretch of text between special tokens, as in llama.cpp.
    steps = [normalizers.Prepend("▁")] if add_prefix else []
    tokenizer.normalizer = normalizers.Sequence([*steps, normalizers.Replace(" ", "▁")])
    decoding = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if add_prefix:
        decoding.append(decoders.Strip(" ", 1, 0))
    tokenizer.decoder = decoders.Sequence(decoding)
    return tokenizer, vocab


def build_tokenizer(gguf: GGUFFile) -> Tokenizer:
    """A ``tokenizers.Tokenizer`` equivalent to llama.cpp's for this file.

    It adds no BOS/EOS itself (see ``GGUFCheckpoint.add_bos_token``). Control tokens (like
    ``<|im_start|>``) become special added tokens and user-defined tokens plain added tokens, so
    both are matched whole in the input; decoding with ``skip_special_tokens=True`` drops only the
    control tokens, as llama.cpp does.
    """
    tokens = require(gguf, "tokenizer.ggml.tokens")
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise GGUFError(f"{gguf.path}: tokenizer.ggml.tokens is not an array of strings")
    types = _token_types(gguf, len(tokens))
    kind = require(gguf, "tokenizer.ggml.model")
    if kind == "gpt2":
        tokenizer, vocab = _byte_level_bpe(gguf, tokens, types)
    elif kind == "llama":
        tokenizer, vocab = _sentencepiece_bpe(gguf, tokens, types)
    else:
        raise GGUFError(
            f"{gguf.path}: tokenizer model {kind!r} (tokenizer.ggml.model) is not supported yet "
            "(supported: 'gpt2', 'llama')"
        )

    special_types = (_CONTROL, _UNKNOWN) if kind == "llama" else (_CONTROL,)
    specials = [t for t, tt in zip(tokens, types.tolist()) if tt in special_types]
    user_defined = [t for t, tt in zip(tokens, types.tolist()) if tt == _USER_DEFINED]
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in user_defined])
    # An added token whose text is not in the model vocabulary would get a fresh id past the end.
    for text in (*specials, *user_defined):
        if tokenizer.token_to_id(text) != vocab.get(text):
            raise GGUFError(
                f"{gguf.path}: special token {text!r} did not keep its id {vocab.get(text)} "
                "in the rebuilt tokenizer"
            )
    return tokenizer
