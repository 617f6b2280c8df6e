"""Incremental detokenization: a growing list of token ids as text deltas, with stop strings held
back and cut, in time linear in the reply's length.

Tokens only ever append text, except that a UTF-8 character split across tokens decodes as
U+FFFD until its last byte arrives; that tail, and the tail that could still become a stop
string, are held back until they are settled, so a streamed reply never shows text that the
final reply would not contain. The text returned is exactly that of decoding all the tokens at
once (``skip_special_tokens=True``), cut before the first stop string.

As vLLM's incremental detokenization does, only a short window of recent tokens is decoded per
call: ``tokens[prefix_offset:read_offset]`` is context already turned into text (decoded again so
that decoders whose output depends on the neighbouring tokens, e.g. SentencePiece's leading
space, see the same neighbours), and ``tokens[read_offset:]`` are the tokens whose text is not
settled yet. The offsets move on once the window's text no longer ends in U+FFFD (every character
is complete). Stop strings are looked for only in the text that is new since the last call plus
the longest stop string's length before it (an earlier occurrence would have been found then).
"""

from __future__ import annotations

from collections.abc import Sequence

REPLACEMENT = "\ufffd"  # what an incomplete (or invalid) UTF-8 sequence decodes as
# Tokens past read_offset after which a window that keeps ending in U+FFFD (or adds no text) is
# settled at an earlier token boundary anyway, so the window stays short even then.
MAX_PENDING = 8
KEEP_PENDING = 4  # tokens left unsettled by that (a UTF-8 character has at most 4 bytes)


class Detokenizer:
    """Text deltas of a growing token list: :meth:`add` the new ids, get the new text."""

    def __init__(self, tokenizer, stops: Sequence[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.stops = tuple(stops)
        self.hold = max((len(s) for s in self.stops), default=1) - 1  # characters that may start a stop
        self.tokens: list[int] = []
        self.prefix_offset = 0  # tokens[prefix_offset:read_offset]: settled context, decoded with the new ones
        self.read_offset = 0  # tokens[:read_offset] are settled text
        self.sent = 0  # characters already returned
        self.stopped = False  # a stop string was found: nothing more is returned
        self._settled = 0  # characters of settled text
        self._kept = ""  # settled text from character _kept_from on: not sent yet, or within reach of a stop
        self._kept_from = 0
        self._prefix_text: str | None = ""  # decode(tokens[prefix_offset:read_offset]); None = not decoded yet
        self._unsettled = ""  # the text of tokens[read_offset:] at the last call
        self._match: int | None = None  # where a stop string was found in text not settled yet

    def add(self, tokens: Sequence[int], final: bool = False) -> str:
        """The new text after these tokens (everything that is left when ``final``)."""
        self.tokens.extend(tokens)
        if self.stopped:
            return ""
        settled_before = self._settled
        self._unsettled = self._decode()
        view, start = self._kept + self._unsettled, self._kept_from  # the whole text from character `start` on
        end = None
        if self.stops:
            since = max(settled_before - self.hold, 0)
            if self._match is not None:
                since = min(since, self._match)
            region = view[since - start :]
            cuts = [i for i in (region.find(s) for s in self.stops) if i >= 0]
            self._match = None
            if cuts:
                end = since + min(cuts)
                # Final once the stop string lies in settled text; one that ends in an incomplete
                # character (a stop string with U+FFFD) may be gone when the character completes.
                self.stopped = any(region.startswith(s, end - since) and end + len(s) <= self._settled for s in self.stops)
                self._match = None if self.stopped else end
        if end is None:
            end = start + len(view)
            if not final:
                end = max(start + len(view.rstrip(REPLACEMENT)) - self.hold, self.sent)
        delta = view[self.sent - start : end - start] if end > self.sent else ""
        self.sent = max(self.sent, end)
        keep_from = max(min(self.sent, self._settled - self.hold), start, 0)
        self._kept, self._kept_from = self._kept[keep_from - start :], keep_from
        return delta

    @property
    def held(self) -> int:
        """Characters decoded at the last :meth:`add` but not returned (an incomplete character, or
        text that may still begin a stop string); 0 once stopped."""
        if self.stopped:
            return 0
        return self._settled + len(self._unsettled) - self.sent

    # ----------------------------------------------------------------- the window
    def _text(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _decode(self) -> str:
        """Settle what the new tokens make final; returns the text of the tokens still unsettled."""
        if self._prefix_text is None:
            self._prefix_text = self._text(self.tokens[self.prefix_offset : self.read_offset])
        prefix = self._prefix_text
        window = self._text(self.tokens[self.prefix_offset :])
        if len(window) > len(prefix) and not window.endswith(REPLACEMENT):
            self._settle(window[len(prefix) :], len(self.tokens))
            return ""
        if len(self.tokens) - self.read_offset > MAX_PENDING:
            # The window keeps ending in U+FFFD or adds no text: settle at an earlier boundary whose
            # text the window extends and that cannot change any more (its characters are complete,
            # or later bytes followed an incomplete one without completing it).
            cut = len(self.tokens) - KEEP_PENDING
            head = self._text(self.tokens[self.prefix_offset : cut])
            if (len(head) >= len(prefix) and window.startswith(head)
                    and (len(window) > len(head) or not head.endswith(REPLACEMENT))):
                self._settle(head[len(prefix) :], cut)
                return window[len(head) :]
        return window[len(prefix) :]

    def _settle(self, text: str, upto: int) -> None:
        self._kept += text
        self._settled += len(text)
        self.prefix_offset, self.read_offset, self._prefix_text = self.read_offset, upto, None
