"""Stop strings: finish a row once its decoded text contains one of them."""

from __future__ import annotations

from collections.abc import Sequence

from ..tokenizer import Tokenizer


class StopStrings:
    """A :data:`~trimode.decoding.base.StopCondition` over decoded text.

    It is checked after every appended token, so a stop string first appears at the end of the
    text; decoding only a tail of tokens (generously sized: a token is at least one byte) keeps the
    check cheap on long outputs.
    """

    def __init__(self, tokenizer: Tokenizer, strings: Sequence[str]) -> None:
        if any(not s for s in strings):
            raise ValueError("stop strings must be non-empty")
        self.tokenizer = tokenizer
        self.strings = tuple(strings)
        self.window = 2 * max((len(s.encode()) for s in self.strings), default=0) + 8

    def __call__(self, tokens: Sequence[int]) -> bool:
        tail = self.tokenizer.decode(tokens[-self.window :])
        return any(s in tail for s in self.strings)

    def trim(self, text: str) -> str:
        """The text before the first stop string (OpenAI semantics: the stop string is not returned)."""
        cuts = [i for i in (text.find(s) for s in self.strings) if i >= 0]
        return text[: min(cuts)] if cuts else text
