"""Turning a growing list of token ids into text deltas, with stop strings held back and cut.

Tokens only ever append text, except that a UTF-8 character split across tokens decodes as
U+FFFD until its last byte arrives; that tail, and the tail that could still become a stop
string, are held back until they are settled, so a streamed reply never shows text that the
final reply would not contain.
"""

from __future__ import annotations

from collections.abc import Sequence


class TextStream:
    def __init__(self, tokenizer, stops: Sequence[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.stops = tuple(stops)
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.tokens: list[int] = []
        self.sent = 0  # characters already returned

    def add(self, tokens: Sequence[int], final: bool = False) -> str:
        """The new text after these tokens (everything that is left when ``final``)."""
        self.tokens.extend(tokens)
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        cuts = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if cuts:
            text, final = text[: min(cuts)], True
        if not final:
            text = text.rstrip("\ufffd")
            text = text[: max(len(text) - self.hold, self.sent)]
        delta = text[self.sent :]
        self.sent = max(self.sent, len(text))
        return delta

    @property
    def text(self) -> str:
        return self.tokenizer.decode(self.tokens, skip_special_tokens=True)
