"""Atomic, pickle-free, verified training checkpoints.

A checkpoint is a folder ``checkpoints/step-NNNNNNNN/`` holding ``model.safetensors`` (the trainable
tensors), ``optimizer.safetensors`` (the optimizer's per-parameter state), ``rng.safetensors`` and
``meta.json`` (step, config, optimizer groups, data position, and the size and sha256 of every other
file, plus a sha256 of its own content). It is written under a temporary name, synced and renamed
into place, so a run killed mid-write leaves the previous checkpoint intact; ``latest.json`` is
updated afterwards, for people and scripts only: resuming scans the step folders, newest first,
and takes the first that verifies, since the pointer can be stale (a kill between the rename and
its update) or damaged.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

_SEP = "::"
FILES = ("model.safetensors", "optimizer.safetensors", "rng.safetensors")
_STEP = re.compile(r"step-(\d+)")
_META_KEYS = ("step", "config", "data", "optimizer_param_groups")


class CheckpointError(ValueError):
    """A checkpoint (or a run folder) that cannot be resumed from; the message says why."""


@dataclass
class Checkpoint:
    path: Path
    meta: dict[str, Any]
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    rng: dict[str, torch.Tensor]
    verified: bool  # False: written before checksums were recorded (its files could not be checked)

    @property
    def step(self) -> int:
        return int(self.meta["step"])

    def restore_rng(self) -> None:
        torch.set_rng_state(self.rng["torch"])
        if torch.cuda.is_available():
            states = [self.rng[k] for k in sorted(self.rng) if k.startswith("cuda")]
            if len(states) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(states)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _meta_digest(meta: dict[str, Any]) -> str:
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2))
    _fsync(tmp)
    os.replace(tmp, path)


def flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """An optimizer state dict keyed by parameter name -> (tensors, JSON-able param groups)."""
    tensors: dict[str, torch.Tensor] = {}
    for name, per_param in state["state"].items():
        for key, value in per_param.items():
            t = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            tensors[f"{name}{_SEP}{key}"] = t.detach().cpu().contiguous()
    return tensors, state["param_groups"]


def unflatten_optimizer(tensors: dict[str, torch.Tensor], groups: list[dict[str, Any]]) -> dict[str, Any]:
    state: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        name, _, field = key.rpartition(_SEP)
        state.setdefault(name, {})[field] = value
    return {"state": state, "param_groups": groups}


def step_folders(output: Path) -> list[Path]:
    """The run's ``step-N`` folders, newest first (complete or not)."""
    root = output / "checkpoints"
    found = [(int(m.group(1)), p) for p in root.glob("step-*") if (m := _STEP.fullmatch(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found, reverse=True)]


def save_checkpoint(
    output: Path,
    step: int,
    model_state: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any],
    meta: dict[str, Any],
    keep: int = 2,
) -> Path:
    root = output / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = root / f".step-{step:08d}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file({k: v.detach().cpu().contiguous() for k, v in model_state.items()}, str(tmp / "model.safetensors"))
    opt_tensors, groups = flatten_optimizer(optimizer_state)
    save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            rng[f"cuda{i}"] = s
    save_file(rng, str(tmp / "rng.safetensors"))
    files = {}
    for name in FILES:
        _fsync(tmp / name)
        files[name] = {"bytes": (tmp / name).stat().st_size, "sha256": _sha256(tmp / name)}
    # As read back (tuples as lists, string keys), so the digest checks what a resume will see.
    record = json.loads(json.dumps({**meta, "step": step, "optimizer_param_groups": groups, "files": files}))
    _write_json(tmp / "meta.json", {**record, "meta_sha256": _meta_digest(record)})
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync(root)
    _write_json(root / "latest.json", {"step": step, "path": final.name})
    # Folders newer than this step were left by a run this one replaced (a fresh start in the same
    # folder, or a resume that fell back past a damaged checkpoint): a later resume must not take them.
    older = []
    for folder in step_folders(output):
        if int(_STEP.fullmatch(folder.name).group(1)) > step:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            older.append(folder)
    for old in older[keep:] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _read_meta(path: Path) -> dict[str, Any]:
    meta_path = path / "meta.json"
    if not meta_path.is_file():
        raise CheckpointError("meta.json is missing (its write never finished)")
    try:
        meta = json.loads(meta_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"meta.json is not valid JSON ({err})") from None
    if not isinstance(meta, dict) or any(k not in meta for k in _META_KEYS):
        raise CheckpointError(f"meta.json lacks one of {', '.join(_META_KEYS)}")
    if "meta_sha256" in meta and meta["meta_sha256"] != _meta_digest(meta):
        raise CheckpointError("meta.json fails its sha256 check (edited or damaged)")
    try:
        expected = f"step-{int(meta['step']):08d}"
    except (TypeError, ValueError):
        raise CheckpointError(f"meta.json has a bad step {meta['step']!r}") from None
    if path.name != expected:
        raise CheckpointError(f"meta.json is for step {meta['step']} (expected the folder to be {expected})")
    return meta


def _verify(path: Path, files: dict[str, Any]) -> None:
    for name in FILES:
        entry, file = files.get(name), path / name
        if not isinstance(entry, dict) or "sha256" not in entry or "bytes" not in entry:
            raise CheckpointError(f"meta.json records no checksum for {name}")
        if not file.is_file():
            raise CheckpointError(f"{name} is missing")
        size = file.stat().st_size
        if size != entry["bytes"]:
            raise CheckpointError(f"{name} has {size} bytes, expected {entry['bytes']} (truncated or overwritten)")
        digest = _sha256(file)
        if digest != entry["sha256"]:
            raise CheckpointError(f"{name} fails its sha256 check (expected {entry['sha256'][:12]}…, "
                                  f"got {digest[:12]}…)")


def read_checkpoint(path: Path) -> Checkpoint:
    """The checkpoint in ``path``, its files checked against the checksums in its meta.json;
    :class:`CheckpointError` says what is wrong with it."""
    meta = _read_meta(path)
    files = meta.get("files")
    if files is not None:
        _verify(path, files)
    tensors = {}
    for name in FILES:
        try:
            tensors[name] = load_file(str(path / name))
        except (SafetensorError, OSError, RuntimeError) as err:
            raise CheckpointError(f"{name} cannot be read ({err})") from None
    try:
        optimizer = unflatten_optimizer(tensors["optimizer.safetensors"], meta["optimizer_param_groups"])
    except (AttributeError, TypeError) as err:
        raise CheckpointError(f"optimizer.safetensors does not match the groups in meta.json ({err})") from None
    if "torch" not in tensors["rng.safetensors"]:
        raise CheckpointError("rng.safetensors has no torch generator state")
    return Checkpoint(path, meta, tensors["model.safetensors"], optimizer, tensors["rng.safetensors"],
                      verified=files is not None)


def newest_checkpoint(output: Path) -> tuple[Checkpoint | None, list[tuple[Path, str]]]:
    """The newest checkpoint of the run that verifies, and the newer ones rejected (folder, why)."""
    rejected = []
    for folder in step_folders(output):
        try:
            return read_checkpoint(folder), rejected
        except CheckpointError as err:
            rejected.append((folder, str(err)))
    return None, rejected


def pointer_problem(output: Path) -> str | None:
    """Why ``checkpoints/latest.json`` is unusable (None when it reads fine)."""
    pointer = output / "checkpoints" / "latest.json"
    if not pointer.is_file():
        return "missing"
    text = pointer.read_text(errors="replace")
    if not text.strip():
        return "empty"
    try:
        path = json.loads(text)["path"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return "not a JSON object with a 'path'"
    return None if isinstance(path, str) and (pointer.parent / path).is_dir() else f"pointing at a missing {path!r}"


def remove_stale_temporaries(output: Path) -> list[tuple[Path, int]]:
    """Remove the ``*.tmp-*`` files and folders a killed run left in ``output`` and its checkpoints
    (a run owns its output folder, so none belongs to a live writer); returns (path, bytes) of each."""
    removed = []
    for root in (output, output / "checkpoints"):
        for path in sorted(root.glob("*.tmp-*")) if root.is_dir() else []:
            if path.is_dir() and not path.is_symlink():
                size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
                shutil.rmtree(path, ignore_errors=True)
            else:
                size = path.lstat().st_size
                path.unlink(missing_ok=True)
            removed.append((path, size))
    return removed
