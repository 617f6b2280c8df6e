"""Documents to token ids plus a loss mask (True = a token the model is trained to produce).

Three document shapes:
* plain text: ``encode(text)`` (with the tokenizer's own special tokens, e.g. a BOS) + EOS, all trained;
* prompt/completion: ``encode(prompt)`` + ``encode(completion)`` (no special tokens) + EOS, only the
  completion and the EOS trained;
* chat ``messages``: rendered with the tokenizer's chat template; only assistant answers are trained,
  each up to and including its turn's end token (an EOS id), never the system/user turns nor the
  template's role headers or the separator after the end token.

The assistant spans are found by rendering prefixes of the conversation and comparing token ids
with the full rendering, not by searching for marker strings: that works for any template, and
where a template tokenizes differently at a boundary the common prefix keeps the span conservative
(a template token is never trained; at worst an answer's first token is not).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Message = dict[str, Any]


@dataclass
class Document:
    ids: list[int]
    mask: list[bool]

    def __post_init__(self) -> None:
        assert len(self.ids) == len(self.mask)


class TokenizerView:
    """The few things data preparation needs from a tokenizer, whatever its class: a
    :class:`trimode.tokenizer.Tokenizer`, or any object with ``encode(text) -> list[int]``, an EOS
    (``eos_token_id`` or ``eos_token_ids``) and, for chat data, ``encode_chat(messages, ...)``."""

    def __init__(self, tokenizer: Any) -> None:
        if tokenizer is None:
            raise ValueError("data preparation needs a tokenizer, but the checkpoint has none (tokenizer is None)")
        if not callable(getattr(tokenizer, "encode", None)):
            raise TypeError(f"tokenizer {type(tokenizer).__name__} has no encode(text) method")
        self.tokenizer = tokenizer
        self.eos_id = _eos_id(tokenizer)
        self.eos_ids = frozenset(getattr(tokenizer, "eos_token_ids", ()) or ()) | {self.eos_id}
        self._special_kwarg = "add_special_tokens" in inspect.signature(tokenizer.encode).parameters

    @property
    def has_chat_template(self) -> bool:
        if not callable(getattr(self.tokenizer, "encode_chat", None)):
            return False
        # Objects without a chat_template attribute but with encode_chat render chats their own way.
        return bool(getattr(self.tokenizer, "chat_template", True))

    def encode(self, text: str, special: bool = True) -> list[int]:
        if not special and self._special_kwarg:
            return list(self.tokenizer.encode(text, add_special_tokens=False))
        return list(self.tokenizer.encode(text))

    def text(self, text: str) -> Document:
        ids = self.encode(text)
        if not ids or ids[-1] not in self.eos_ids:
            ids.append(self.eos_id)
        return Document(ids, [True] * len(ids))

    def prompt_completion(self, prompt: str, completion: str) -> Document:
        prompt_ids = self.encode(prompt)
        answer = self.encode(completion, special=False) + [self.eos_id]
        return Document(prompt_ids + answer, [False] * len(prompt_ids) + [True] * len(answer))

    def chat(self, messages: Sequence[Message]) -> Document:
        messages = list(messages)
        full = self._render(messages, generation_prompt=False)
        mask = [False] * len(full)
        answers = [k for k, m in enumerate(messages) if m["role"] == "assistant"]
        starts = [_common_prefix(full, self._render(messages[:k], generation_prompt=True)) for k in answers]
        for n, (k, start) in enumerate(zip(answers, starts)):
            # What the model generates after the generation prompt, through the EOS that stops it.
            # The turn rendered as the last message bounds it for templates without end tokens;
            # it may differ from the full rendering (Qwen3 adds an empty think block to a final
            # answer only), in which case the first EOS alone decides.
            turn_end = _common_prefix(full, self._render(messages[: k + 1], generation_prompt=False))
            limit = starts[n + 1] if n + 1 < len(starts) else len(full)
            eos = next((i for i in range(start, limit) if full[i] in self.eos_ids), None)
            end = eos + 1 if eos is not None and (eos < turn_end or turn_end <= start) else turn_end
            for i in range(start, end):
                mask[i] = True
        # Documents are separated by EOS when packed. A chat already ends with its last turn's end
        # token, followed at most by the template's separator (ChatML's "\n"), which is cut so the
        # next document follows the EOS directly; a template without end tokens gets an untrained EOS.
        last_eos = max((i for i, t in enumerate(full) if t in self.eos_ids), default=-1)
        if last_eos >= 0 and all(not m for m in mask[last_eos + 1 :]):
            del full[last_eos + 1 :], mask[last_eos + 1 :]
        else:
            full.append(self.eos_id)
            mask.append(False)
        return Document(full, mask)

    def chat_as_text(self, messages: Sequence[Message]) -> Document:
        """A conversation for a tokenizer without a chat template: the contents, one per
        paragraph, trained as plain text."""
        return self.text("\n\n".join(m["content"] for m in messages))

    def _render(self, messages: list[Message], generation_prompt: bool) -> list[int]:
        if not messages and generation_prompt:
            # Templates may refuse an empty conversation; an answer that opens the chat has no prefix.
            try:
                return list(self.tokenizer.encode_chat([], add_generation_prompt=True))
            except Exception:  # noqa: BLE001 - any template failure means "no prefix"
                return []
        return list(self.tokenizer.encode_chat(messages, add_generation_prompt=generation_prompt))


def _eos_id(tokenizer: Any) -> int:
    eos = getattr(tokenizer, "eos_token_id", None)
    backend, eos_text = getattr(tokenizer, "backend", None), getattr(tokenizer, "eos_token", None)
    if eos is None and backend is not None and eos_text:
        eos = backend.token_to_id(eos_text)  # the tokenizer's own EOS before a config's list
    if eos is None and getattr(tokenizer, "eos_token_ids", None):
        eos = tokenizer.eos_token_ids[0]
    if eos is None:
        raise ValueError(
            f"tokenizer {type(tokenizer).__name__} has no EOS token (expected eos_token_id or eos_token_ids); "
            "documents are separated by EOS when packed"
        )
    return int(eos)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n
