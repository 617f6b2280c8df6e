"""The API's ``logprobs`` objects from the verifier's :class:`~trimode.decoding.score.TokenScores`.

Completions (OpenAI's legacy format, as lm-evaluation-harness reads it): ``tokens`` (each token's
text), ``token_logprobs`` (None for the first token of the prompt, which nothing precedes),
``top_logprobs`` (per position, the k most likely tokens' text -> log-probability, plus the chosen
token when it is not among them, as vLLM does) and ``text_offset`` (where each token starts in the
choice's ``text``). Chat: ``{"content": [{"token", "logprob", "bytes", "top_logprobs"}]}``.

A token's text comes from its bytes: byte-level BPE vocabularies (GPT-2 style, SmolLM2's) map each
token to bytes, so a token holding part of a UTF-8 character is shown as ``bytes:\\xe2\\x80`` (as
OpenAI does) and the text offsets, counted by decoding the bytes incrementally, match the decoded
text. Special tokens count as their own text. Without a tokenizer a token is ``token_id:N``.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from ..decoding.score import TokenScores


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """The inverse of GPT-2's bytes -> printable characters table used by byte-level BPE vocabularies."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = list(keep), 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(keep, chars)}


@lru_cache(maxsize=8)
def _vocabulary_facts(tokenizer) -> tuple[bool, dict[int, str]]:
    """Whether the vocabulary is byte-level, and the special tokens' texts: read once per tokenizer,
    not per reply."""
    backend = tokenizer.backend
    byte_level = backend.decoder is not None and b'"ByteLevel"' in backend.decoder.__getstate__()
    return byte_level, {i: t.content for i, t in backend.get_added_tokens_decoder().items()}


class TokenText:
    """Each token's bytes and text, for one tokenizer (or none)."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.byte_level, self.special = _vocabulary_facts(tokenizer) if tokenizer is not None else (False, {})

    def bytes(self, token: int) -> bytes:
        if self.tokenizer is None:
            return f"token_id:{token}".encode()
        if token in self.special:
            return self.special[token].encode()
        if self.byte_level:
            piece = self.tokenizer.backend.id_to_token(token)
            table = _byte_decoder()
            if piece is not None and all(c in table for c in piece):
                return bytes(table[c] for c in piece)
        return self.tokenizer.decode([token]).encode()

    def text(self, token: int) -> str:
        raw = self.bytes(token)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return "bytes:" + "".join(f"\\x{b:02x}" for b in raw)

    def offsets(self, tokens: Sequence[int]) -> list[int]:
        """Where each token starts in the text the tokens decode to."""
        decoder, at, out = codecs.getincrementaldecoder("utf-8")(errors="replace"), 0, []
        for token in tokens:
            out.append(at)
            at += len(decoder.decode(self.bytes(token)))
        return out


def reported(scores: TokenScores, texts: TokenText, prompt_tokens: int, stop_at: int | None) -> int:
    """How many scored tokens the reply reports: all of them (the EOS a reply ends with included,
    as likelihood harnesses count generated tokens), except that when a stop string cut the
    completion's text at character ``stop_at``, the tokens that begin after the cut are left out."""
    if stop_at is None:
        return len(scores.scored)
    before = max(prompt_tokens - scores.start, 0)  # prompt tokens among the scored ones (echo)
    starts = texts.offsets(scores.scored[before:])
    return before + sum(1 for s in starts if s < stop_at)


def completion_logprobs(scores: TokenScores, texts: TokenText, count: int) -> dict[str, Any]:
    tokens = scores.scored[:count]
    top = []
    for token, chosen, alternatives in zip(tokens, scores.logprobs, scores.top):
        if chosen is None:
            top.append(None)
            continue
        entry = {texts.text(t): lp for t, lp in alternatives}
        entry.setdefault(texts.text(token), chosen)
        top.append(entry)
    return {"tokens": [texts.text(t) for t in tokens], "token_logprobs": scores.logprobs[:count],
            "top_logprobs": top, "text_offset": texts.offsets(tokens)}


def chat_logprobs(scores: TokenScores, texts: TokenText, count: int, top: int) -> dict[str, Any]:
    def item(token: int, logprob: float) -> dict[str, Any]:
        return {"token": texts.text(token), "logprob": logprob, "bytes": list(texts.bytes(token))}

    content = []
    for token, chosen, alternatives in zip(scores.scored[:count], scores.logprobs, scores.top):
        content.append({**item(token, chosen), "top_logprobs": [item(t, lp) for t, lp in alternatives[:top]]})
    return {"content": content}
