"""Training data: text, JSONL and source-code files, tokenized and packed into fixed-length sequences.

Sources (``DataConfig.paths``, each a file or a directory; kinds are detected per file):
* ``.jsonl``: one JSON object per line, either ``{"text": ...}`` (pretraining style, every token
  trained), ``{"messages": [{"role", "content"}, ...]}`` (chat/SFT: the chat template is applied and
  only assistant answers are trained, see :mod:`trimode.train.data_tokens`), or
  ``{"prompt": ..., "completion": ...}`` (raw concatenation, only the completion trained; what
  ``trimode distill-data --no-chat`` writes), or pre-tokenized ``{"input_ids": [...], "loss_mask":
  [...]}`` (used verbatim, EOS not added; ``loss_mask`` defaults to all True; the only kind that
  needs no tokenizer, for checkpoints without one). Blank lines are skipped.
* any other file given by name: plain text, one document per file.
* directories, recursively in sorted order: ``.jsonl`` and ``.txt`` files as above, files with a
  ``code_suffixes`` suffix as plain-text documents; other files, hidden entries and ``__pycache__``
  are skipped (counted in ``summary``), as are files that are not UTF-8 text.

Every document (pre-tokenized ones aside) ends with EOS. Documents are concatenated in file order and cut into ``seq_len``
chunks; the last partial chunk is dropped (``summary["dropped_tokens"]``), so no sequence carries
padding. ``loss_mask[i]`` is True where token i is a training target: the trainer predicts (AR) and
may mask (diffusion) only those positions; prompts of chat/SFT data are False.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .data_batches import Batches
from .data_tokens import Document, TokenizerView

__all__ = ["Batches", "DataConfig", "DataError", "PackedDataset", "build_dataset"]

CODE_SUFFIXES = (".py", ".c", ".h", ".js", ".ts", ".rs", ".go", ".java", ".sh", ".md")


class DataError(ValueError):
    """Unusable training data; the message names the file (and line) and what was expected."""


@dataclass(frozen=True)
class DataConfig:
    paths: tuple[str, ...]  # files or directories; kind detected per file
    seq_len: int  # length of each packed sequence
    seed: int = 0  # shuffling seed (used by Batches; packing itself is in file order)
    chat: bool | None = None  # JSONL `messages`: True = chat template; False = plain text; None = template if any
    code_suffixes: tuple[str, ...] = CODE_SUFFIXES
    max_files: int | None = None  # cap for huge directories (e.g. the stdlib): the first N files in sorted order

    def __post_init__(self) -> None:
        paths = (self.paths,) if isinstance(self.paths, (str, os.PathLike)) else self.paths
        object.__setattr__(self, "paths", tuple(str(p) for p in paths))
        if not self.paths:
            raise DataError("DataConfig.paths is empty; give at least one file or directory")
        if self.seq_len < 2:
            raise DataError(f"seq_len must be >= 2, got {self.seq_len}")
        if self.max_files is not None and self.max_files < 1:
            raise DataError(f"max_files must be >= 1 or None, got {self.max_files}")


@dataclass
class _File:
    path: Path
    source: str  # the DataConfig path it came from
    kind: str  # "jsonl" | "text" | "code"
    explicit: bool  # named in DataConfig.paths (not found in a directory)


@dataclass
class _Counts:
    files: int = 0
    documents: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    skipped_files: int = 0
    kinds: dict[str, int] = field(default_factory=dict)  # documents per kind


class PackedDataset:
    """Fixed-length sequences in memory: ``ds[i]`` = ``{"input_ids": LongTensor[L], "loss_mask": BoolTensor[L]}``."""

    def __init__(self, input_ids: torch.Tensor, loss_mask: torch.Tensor, summary: dict[str, Any] | None = None) -> None:
        if input_ids.ndim != 2 or input_ids.shape != loss_mask.shape:
            raise ValueError(f"expected input_ids and loss_mask of one shape [N, L], got {tuple(input_ids.shape)} "
                             f"and {tuple(loss_mask.shape)}")
        self.input_ids = input_ids  # stored as int32 when the vocabulary allows (half the memory)
        self.loss_mask = loss_mask.bool()
        self.summary = summary or {}

    @property
    def seq_len(self) -> int:
        return self.input_ids.shape[1]

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids[i].long(), "loss_mask": self.loss_mask[i]}

    @cached_property
    def fingerprint(self) -> str:
        """A hash of the packed tokens and masks: a resumed run checks it sees the same data."""
        h = hashlib.sha256()
        h.update(self.input_ids.contiguous().numpy().data)
        h.update(self.loss_mask.contiguous().numpy().data)
        return h.hexdigest()[:16]


def build_dataset(config: DataConfig, tokenizer: Any) -> PackedDataset:
    view = TokenizerView(tokenizer) if tokenizer is not None else None  # None: pre-tokenized records only
    files, counts = _discover(config)
    if not files:
        raise DataError(f"no data files in {list(config.paths)} (expected .jsonl, .txt or files ending in "
                        f"{', '.join(config.code_suffixes)})")
    chat = _chat_mode(config.chat, view)
    ids: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    total = sum(f.path.stat().st_size for f in files)
    with tqdm(total=total, unit="B", unit_scale=True, desc="tokenizing", disable=None, leave=False) as bar:
        for f in files:
            c, used = counts[f.source], True
            for kind, doc in _documents(f, view, chat, bar):
                if doc is None:  # not text after all
                    used = False
                    continue
                ids.append(np.asarray(doc.ids, dtype=np.int64))
                masks.append(np.asarray(doc.mask, dtype=bool))
                c.documents += 1
                c.tokens += len(doc.ids)
                c.trained_tokens += sum(doc.mask)
                c.kinds[kind] = c.kinds.get(kind, 0) + 1
            c.files += used
            c.skipped_files += not used
    n_tokens = sum(len(x) for x in ids)
    n_seq = n_tokens // config.seq_len
    if n_seq == 0:
        raise DataError(
            f"{n_tokens} tokens in {sum(c.documents for c in counts.values())} documents from {list(config.paths)}: "
            f"fewer than seq_len={config.seq_len}, so not one sequence can be packed (add data or lower seq_len)"
        )
    flat_ids = np.concatenate(ids)[: n_seq * config.seq_len].reshape(n_seq, config.seq_len)
    flat_mask = np.concatenate(masks)[: n_seq * config.seq_len].reshape(n_seq, config.seq_len)
    store = torch.int32 if flat_ids.max() < 2**31 else torch.int64
    input_ids = torch.from_numpy(flat_ids).to(store)
    loss_mask = torch.from_numpy(flat_mask)
    summary = {
        "documents": sum(c.documents for c in counts.values()),
        "tokens": n_tokens,
        "sequences": n_seq,
        "seq_len": config.seq_len,
        "packed_tokens": n_seq * config.seq_len,
        "dropped_tokens": n_tokens - n_seq * config.seq_len,
        "trained_tokens": int(loss_mask.sum()),
        "chat_template": chat,
        "sources": {src: asdict(c) for src, c in counts.items()},
    }
    return PackedDataset(input_ids, loss_mask, summary)


def _chat_mode(chat: bool | None, view: TokenizerView | None) -> bool:
    has = view is not None and view.has_chat_template
    if chat and not has:
        raise DataError("chat=True but the tokenizer has no chat template; use chat=False to train "
                        "conversations as plain text")
    return has if chat is None else chat


def _need(view: TokenizerView | None, where: str) -> TokenizerView:
    if view is None:
        raise DataError(f"{where}: text needs a tokenizer, and none was given (the checkpoint has none); "
                        'use pre-tokenized JSONL records {"input_ids": [...], "loss_mask": [...]} instead')
    return view


# ----------------------------------------------------------------- files
def _discover(config: DataConfig) -> tuple[list[_File], dict[str, _Counts]]:
    files: list[_File] = []
    counts = {src: _Counts() for src in config.paths}
    for src in config.paths:
        root = Path(src)
        if not root.exists():
            raise FileNotFoundError(f"data path {src} does not exist (expected a file or a directory)")
        if root.is_file():
            files.append(_File(root, src, _kind(root, config.code_suffixes, explicit=True), explicit=True))
            continue
        for path in _walk(root):
            kind = _kind(path, config.code_suffixes, explicit=False)
            if kind is None:
                counts[src].skipped_files += 1
            else:
                files.append(_File(path, src, kind, explicit=False))
    if config.max_files is not None:
        for f in files[config.max_files:]:
            counts[f.source].skipped_files += 1
        files = files[: config.max_files]
    return files, counts


def _walk(root: Path) -> Iterator[Path]:
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        if entry.name.startswith(".") or entry.name == "__pycache__":
            continue
        if entry.is_dir():
            yield from _walk(entry)
        elif entry.is_file():
            yield entry


def _kind(path: Path, code_suffixes: tuple[str, ...], explicit: bool) -> str | None:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return "jsonl"
    if suffix in code_suffixes:
        return "code"
    if suffix == ".txt" or explicit:
        return "text"
    return None


# ----------------------------------------------------------------- documents
def _documents(f: _File, view: TokenizerView | None, chat: bool, bar) -> Iterator[tuple[str, Document | None]]:
    """A file's documents; a file in a directory that is not UTF-8 text yields one None."""
    if f.kind != "jsonl":
        try:
            text = f.path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            if f.explicit:  # named explicitly: the user meant it, so say what is wrong
                raise DataError(f"{f.path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
            bar.update(f.path.stat().st_size)
            yield "binary", None
            return
        bar.update(f.path.stat().st_size)
        if text.strip():
            yield f.kind, _need(view, str(f.path)).text(text)
        return
    with f.path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            bar.update(len(raw))
            if raw.strip():
                yield _record(f.path, lineno, raw, view, chat)


def _record(path: Path, lineno: int, raw: bytes, view: TokenizerView | None, chat: bool) -> tuple[str, Document]:
    where = f"{path}:{lineno}"
    try:
        obj = json.loads(raw)
    except UnicodeDecodeError as err:
        raise DataError(f"{where}: not UTF-8 ({err.reason})") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{where}: invalid JSON ({err.msg} at column {err.colno}); expected one object per line") from None
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if "input_ids" in obj:
        return "ids", _ids_record(where, obj)
    view = _need(view, where)
    if "messages" in obj:
        messages = validate_messages(where, obj["messages"])
        try:
            return ("chat", view.chat(messages)) if chat else ("chat-text", view.chat_as_text(messages))
        except Exception as err:  # template errors: say which record
            raise DataError(f"{where}: the chat template failed on this conversation: {err}") from err
    if "text" in obj:
        if not isinstance(obj["text"], str):
            raise DataError(f"{where}: 'text' must be a string, got {type(obj['text']).__name__}")
        return "text", view.text(obj["text"])
    if "prompt" in obj and "completion" in obj:
        if not isinstance(obj["prompt"], str) or not isinstance(obj["completion"], str):
            raise DataError(f"{where}: 'prompt' and 'completion' must be strings")
        return "prompt-completion", view.prompt_completion(obj["prompt"], obj["completion"])
    raise DataError(f"{where}: expected a 'text', 'messages', 'prompt'+'completion' or 'input_ids' key, "
                    f"got keys {sorted(obj)}")


def _ids_record(where: str, obj: dict[str, Any]) -> Document:
    ids, mask = obj["input_ids"], obj.get("loss_mask")
    if not isinstance(ids, list) or not ids or not all(isinstance(t, int) and t >= 0 for t in ids):
        raise DataError(f"{where}: 'input_ids' must be a non-empty list of token ids (integers >= 0)")
    if mask is None:
        mask = [True] * len(ids)
    if not isinstance(mask, list) or len(mask) != len(ids) or not all(m in (0, 1) for m in mask):
        raise DataError(f"{where}: 'loss_mask' must be a list of {len(ids)} booleans (one per input id)")
    return Document(ids, [bool(m) for m in mask])


def validate_messages(where: str, messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: 'messages' must be a non-empty list of {{'role', 'content'}} objects")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise DataError(f"{where}: message {i} must be an object with string 'role' and 'content', got {m!r}")
    return messages
