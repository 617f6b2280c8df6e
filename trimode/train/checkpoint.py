"""Atomic, pickle-free training checkpoints.

A checkpoint is a folder ``checkpoints/step-NNNNNNNN/`` holding ``model.safetensors`` (the trainable
tensors), ``optimizer.safetensors`` (the optimizer's per-parameter state), ``rng.safetensors`` and
``meta.json`` (step, config, optimizer groups, data position). It is written under a temporary name
and renamed into place, so a run killed mid-write leaves the previous checkpoint intact; ``latest``
is updated the same way afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

_SEP = "::"


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2))
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
    _write_json(tmp / "meta.json", {**meta, "step": step, "optimizer_param_groups": groups})
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _write_json(root / "latest.json", {"step": step, "path": final.name})
    for old in sorted(root.glob("step-*"))[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(output: Path) -> Path | None:
    root = output / "checkpoints"
    pointer = root / "latest.json"
    if pointer.is_file():
        path = root / json.loads(pointer.read_text())["path"]
        if (path / "meta.json").is_file():
            return path
    complete = [p for p in sorted(root.glob("step-*")) if (p / "meta.json").is_file()]
    return complete[-1] if complete else None


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    meta = json.loads((path / "meta.json").read_text())
    model_state = load_file(str(path / "model.safetensors"))
    optimizer = unflatten_optimizer(load_file(str(path / "optimizer.safetensors")), meta["optimizer_param_groups"])
    rng = load_file(str(path / "rng.safetensors"))
    torch.set_rng_state(rng["torch"])
    if torch.cuda.is_available():
        states = [rng[k] for k in sorted(rng) if k.startswith("cuda")]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
    return model_state, optimizer, meta
