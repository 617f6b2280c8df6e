"""The API's response objects, built as dicts: model cards, errors, whole replies and the chunks of
a streamed one (Server-Sent Events, one JSON object per ``data:`` line, then ``data: [DONE]``).

:class:`Reply` follows one request from its engine events to what the client gets: the text
deltas (:class:`~trimode.decoding.text.Detokenizer`, stop strings cut), the reply object when it
is not streamed, and for a streamed one the chunks each event sends. A model without a tokenizer
sends token ids instead of text (``token_ids`` in each chunk). A completions request with several
prompts has one Reply per prompt (its ``index``); :func:`combine` joins their replies.

``echo`` puts the prompt's text before the completion. With ``logprobs`` (:mod:`.logprobs`), the
scores arrive with the "done" event, so a streamed reply that asks for them sends its text in one
chunk at the end, with them.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

from ..decoding.text import Detokenizer
from ..engine import Event
from .logprobs import TokenText, chat_logprobs, completion_logprobs, reported
from .translate import ServerConfig

FINISH = {"eos": "stop", "stop": "stop", "length": "length", "cancelled": "cancelled"}
ERROR_TYPES = {401: "authentication_error", 404: "not_found_error", 503: "server_overloaded", 500: "server_error"}  # else invalid_request_error
DONE = "data: [DONE]\n\n"


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    kind = ERROR_TYPES.get(status, "invalid_request_error")
    return {"error": {"message": printable(message), "type": kind, "param": param and printable(param), "code": code}}


def printable(text: str) -> str:
    """``text`` that can be sent as UTF-8: a lone surrogate quoted from a request is escaped."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def model_card(config: ServerConfig) -> dict[str, Any]:
    return {"id": config.model_name, "object": "model", "created": 0, "owned_by": "trimode",
            "max_context": config.max_context, "default_mode": config.mode}


def model_list(config: ServerConfig) -> dict[str, Any]:
    return {"object": "list", "data": [model_card(config)]}


def sse(obj: dict[str, Any]) -> str:
    """One Server-Sent Event carrying ``obj`` as JSON."""
    return f"data: {json.dumps(obj)}\n\n"


class Reply:
    """One choice of a completion (``chat=False``) or chat completion: its id, and its objects from
    its events."""

    def __init__(self, chat: bool, model_name: str, tokenizer=None, stops: Sequence[str] = (),
                 id: str | None = None, created: int | None = None, *, index: int = 0,
                 prompt: Sequence[int] = (), echo: bool = False, logprobs: int | None = None) -> None:
        self.chat, self.model_name, self.index = chat, model_name, index
        self.id = id or f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time()) if created is None else created
        self.object = "chat.completion" if chat else "text_completion"
        self.text = Detokenizer(tokenizer, stops) if tokenizer is not None else None
        self.prompt, self.echo, self.logprobs = list(prompt), echo and not chat, logprobs
        self.prefix = tokenizer.decode(self.prompt) if self.echo and tokenizer is not None else ""
        self.texts = TokenText(tokenizer) if logprobs is not None else None
        self._held = ""  # streamed text kept back to go out with the logprobs

    def delta(self, event: Event) -> str:
        """The new text of a "tokens" or "done" event (all that is left at "done")."""
        if self.text is None:
            return ""
        return self.text.add(event.tokens, final=event.kind == "done")

    def logprobs_of(self, done: Event, content: str) -> dict[str, Any] | None:
        """The choice's ``logprobs`` object, from the scores the "done" event carries."""
        scores = done.scores
        if self.logprobs is None or scores is None:
            return None
        cut = self.text is not None and self.text.stopped
        count = reported(scores, self.texts, len(self.prompt) if self.echo else 0, len(content) if cut else None)
        if self.chat:
            return chat_logprobs(scores, self.texts, count, self.logprobs)
        return completion_logprobs(scores, self.texts, count)

    # ----------------------------------------------------------------- not streamed
    def response(self, content: str, done: Event, token_ids: list[int]) -> dict[str, Any]:
        """The whole reply: its text, why it finished, and (an extra field) the exact output ids."""
        choice: dict[str, Any] = {"index": self.index, "finish_reason": FINISH[done.finish_reason]}
        if self.chat:
            choice["message"] = {"role": "assistant", "content": content}
            choice["logprobs"] = self.logprobs_of(done, content)
            if choice["logprobs"] is None:
                del choice["logprobs"]
        else:
            choice.update(text=self.prefix + content, logprobs=self.logprobs_of(done, content))
        choice["token_ids"] = token_ids
        return {"id": self.id, "object": self.object, "created": self.created, "model": self.model_name,
                "choices": [choice], "usage": done.usage}

    # ----------------------------------------------------------------- streamed
    def opening(self) -> list[dict[str, Any]]:
        """Chunks sent before any event: a chat reply opens with the assistant's role, an echoed
        completion with its prompt (unless it waits for its logprobs)."""
        if self.chat:
            return [self.chunk({"role": "assistant", "content": ""})]
        if self.prefix and self.logprobs is None:
            return [self.chunk({"content": self.prefix})]
        return []

    def chunks(self, event: Event) -> list[dict[str, Any]]:
        """The chunks one event sends: text as it settles (ids without a tokenizer), then at "done"
        the last text and a closing chunk with the finish reason and the usage; an "error" sends an
        error object."""
        if event.kind == "error":
            return [{"error": {"message": event.message, "type": "server_error"}}]
        text = self.delta(event)
        if self.logprobs is not None:
            self._held += text
            if event.kind != "done":
                return []
            whole = self._held
            logprobs = self.logprobs_of(event, whole)
            opened = self.chunk({"content": (self.prefix if not self.chat else "") + whole}, logprobs=logprobs)
            closing = self.chunk(None, finish=FINISH[event.finish_reason], tokens=event.tokens, usage=event.usage)
            return [opened, closing]
        if event.kind == "done":
            closing = self.chunk(None, finish=FINISH[event.finish_reason], tokens=event.tokens, usage=event.usage)
            return ([self.chunk({"content": text})] if text else []) + [closing]
        if text or self.text is None:
            return [self.chunk({"content": text}, tokens=event.tokens)]
        return []

    def chunk(self, delta: dict[str, str] | None, finish: str | None = None, tokens: Sequence[int] = (),
              usage: dict[str, Any] | None = None, logprobs: dict[str, Any] | None = None) -> dict[str, Any]:
        """One streamed chunk. ``delta``: chat's delta object ({} when None); a completion sends its
        ``content`` as ``text``."""
        if self.chat:
            choice: dict[str, Any] = {"index": self.index, "delta": delta or {}, "finish_reason": finish}
            if logprobs is not None:
                choice["logprobs"] = logprobs
        else:
            choice = {"index": self.index, "text": (delta or {}).get("content", ""), "finish_reason": finish,
                      "logprobs": logprobs}
        if self.text is None and tokens:
            choice["token_ids"] = list(tokens)
        out = {"id": self.id, "object": self.object + (".chunk" if self.chat else ""), "created": self.created,
               "model": self.model_name, "choices": [choice]}
        if finish is not None:
            out["usage"] = usage
        return out


def combine(replies: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One response for the replies to the prompts of one request: their choices in order, and the
    usage summed (tokens per forward over the sums; accepted lengths averaged over the choices)."""
    if len(replies) == 1:
        return replies[0]
    usages = [r["usage"] or {} for r in replies]
    usage: dict[str, Any] = {k: sum(u.get(k, 0) for u in usages)
                             for k in ("prompt_tokens", "completion_tokens", "total_tokens", "nfe")}
    usage["tokens_per_forward"] = round(usage["completion_tokens"] / usage["nfe"], 4) if usage["nfe"] else 0.0
    forwards: dict[str, int] = {}
    for u in usages:
        for kind, n in u.get("forwards", {}).items():
            forwards[kind] = forwards.get(kind, 0) + n
    usage["forwards"] = forwards
    accepted = [u["mean_accepted_length"] for u in usages if "mean_accepted_length" in u]
    if accepted:
        usage["mean_accepted_length"] = round(sum(accepted) / len(accepted), 3)
    return {**replies[0], "choices": [c for r in replies for c in r["choices"]], "usage": usage}
