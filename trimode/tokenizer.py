"""Tokenizer: a ``tokenizers`` backend plus the checkpoint's special ids and chat template.

Chat templates are rendered with a sandboxed Jinja environment configured like transformers'
(trim_blocks, lstrip_blocks, ``raise_exception``, ``tojson``), and the rendered text is encoded
without adding special tokens, because templates that want a BOS write it themselves (adding one
here would duplicate it).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import tokenizers
import tokenizers.processors
from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .files import CheckpointError, one_line, read_json


class Tokenizer:
    def __init__(
        self,
        backend: tokenizers.Tokenizer,
        *,
        bos_token: str | None = None,
        eos_token: str | None = None,
        eos_token_ids: Sequence[int] = (),
        chat_template: str | None = None,
        add_bos_token: bool = False,
        extra_template_vars: dict[str, Any] | None = None,
    ) -> None:
        self.backend = backend
        self.bos_token, self.eos_token = bos_token, eos_token
        self.bos_token_id = backend.token_to_id(bos_token) if bos_token else None
        eos_ids = list(eos_token_ids)
        if eos_token and backend.token_to_id(eos_token) is not None and backend.token_to_id(eos_token) not in eos_ids:
            eos_ids.append(backend.token_to_id(eos_token))
        self.eos_token_ids = tuple(eos_ids)
        self.chat_template = chat_template
        # Only for backends whose post-processor does not add BOS itself (GGUF files carry a flag).
        self.add_bos_token = add_bos_token
        self.extra_template_vars = extra_template_vars or {}

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = self.backend.encode(text, add_special_tokens=add_special_tokens).ids
        if add_special_tokens and self.add_bos_token and self.bos_token_id is not None:
            if not ids or ids[0] != self.bos_token_id:
                ids = [self.bos_token_id] + ids
        return ids

    @cached_property
    def max_token_chars(self) -> int:
        """The most characters of text one token can stand for (at least 1). A text longer than
        ``n * max_token_chars`` has more than n tokens, which a server checks before tokenizing."""
        pieces = self.backend.get_vocab(with_added_tokens=True)
        # Byte-level vocabularies spell each byte as one character, and a text character takes at
        # least one byte, so the spelled length bounds the text a token covers either way.
        return max([1, *map(len, pieces)])

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    # ----------------------------------------------------------------- chat
    @cached_property
    def _template(self):
        if not self.chat_template:
            raise ValueError("this checkpoint has no chat template; pass plain text (no --chat)")
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])

        def raise_exception(message: str) -> None:
            raise TemplateError(message)

        env.filters["tojson"] = lambda x, indent=None, ensure_ascii=False: json.dumps(
            x, indent=indent, ensure_ascii=ensure_ascii
        )
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        return env.from_string(self.chat_template)

    def render_chat(self, messages: Sequence[dict[str, Any]], add_generation_prompt: bool = True, **kwargs: Any) -> str:
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or "role" not in m or "content" not in m:
                raise ValueError(f"message {i} must be a dict with 'role' and 'content', got {m!r}")
        variables = {
            **self.extra_template_vars,
            "bos_token": self.bos_token or "",
            "eos_token": self.eos_token or "",
            **kwargs,
        }
        return self._template.render(messages=list(messages), add_generation_prompt=add_generation_prompt, **variables)

    def encode_chat(self, messages: Sequence[dict[str, Any]], add_generation_prompt: bool = True, **kwargs: Any) -> list[int]:
        return self.encode(self.render_chat(messages, add_generation_prompt, **kwargs), add_special_tokens=False)

    # ----------------------------------------------------------------- loading
    @classmethod
    def from_folder(cls, folder: str | Path, eos_token_ids: Sequence[int] = ()) -> "Tokenizer":
        """Load ``tokenizer.json`` (+ ``tokenizer_config.json``, ``chat_template.jinja``) from a checkpoint."""
        folder = Path(folder)
        path = folder / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"no tokenizer.json in {folder}")
        try:
            backend = tokenizers.Tokenizer.from_file(str(path))
        except Exception as err:  # noqa: BLE001 (tokenizers raises a bare Exception for a malformed file)
            raise CheckpointError(f"{path}: not a valid tokenizer.json ({one_line(err)})") from None
        config_path = folder / "tokenizer_config.json"
        cfg: dict[str, Any] = read_json(config_path) if config_path.is_file() else {}
        template = cfg.get("chat_template")
        if isinstance(template, list):  # named templates: take the default one
            if not all(isinstance(t, dict) for t in template):
                raise CheckpointError(f"{config_path}: chat_template must be a string or a list of "
                                      "{name, template} objects")
            named = {t.get("name"): t.get("template") for t in template}
            template = named.get("default") or next(iter(named.values()), None)
        if (folder / "chat_template.jinja").is_file():
            try:
                template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as err:
                raise CheckpointError(f"{folder / 'chat_template.jinja'}: cannot be read ({one_line(err)})") from None
        elif (folder / "chat_template.json").is_file():
            template = read_json(folder / "chat_template.json").get("chat_template")
        if template is not None and not isinstance(template, str):
            raise CheckpointError(f"{folder}: the chat template must be a string, got {type(template).__name__}")
        for key in ("bos_token", "eos_token"):
            if not isinstance(_token_str(cfg.get(key)), (str, type(None))):
                raise CheckpointError(f"{config_path}: {key} must be a token string, got {cfg[key]!r}")
        return cls(
            backend,
            bos_token=_token_str(cfg.get("bos_token")),
            eos_token=_token_str(cfg.get("eos_token")),
            eos_token_ids=eos_token_ids,
            chat_template=template,
            add_bos_token=bool(cfg.get("add_bos_token", False)),
        )

    def save(self, folder: str | Path) -> None:
        """Write ``tokenizer.json``, ``tokenizer_config.json`` and ``chat_template.jinja`` so that
        :meth:`from_folder` (and transformers) read this tokenizer back, e.g. one rebuilt from a GGUF.
        A BOS this class adds (``add_bos_token``) goes into the saved post-processor, which adds it
        to every text, as transformers does, even one that already starts with the BOS string."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        backend = self.backend
        if self.add_bos_token and self.bos_token_id is not None and self._bos_missing():
            # transformers ignores add_bos_token for a fast tokenizer: the BOS this class adds must
            # be written into the saved tokenizer's post-processor for other tools to add it too.
            backend = tokenizers.Tokenizer.from_str(backend.to_str())
            bos = self.bos_token
            backend.post_processor = tokenizers.processors.TemplateProcessing(
                single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 $B:1", special_tokens=[(bos, self.bos_token_id)])
        backend.save(str(folder / "tokenizer.json"), pretty=False)
        cfg = {"bos_token": self.bos_token, "eos_token": self.eos_token, "add_bos_token": self.add_bos_token,
               "tokenizer_class": "PreTrainedTokenizerFast"}
        (folder / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))
        if self.chat_template:
            (folder / "chat_template.jinja").write_text(self.chat_template)

    def _bos_missing(self) -> bool:
        ids = self.backend.encode("a", add_special_tokens=True).ids
        return not ids or ids[0] != self.bos_token_id


def _token_str(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value
