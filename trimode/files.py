"""Reading the files of a checkpoint folder as untrusted input.

Every failure is a :class:`CheckpointError` (a ValueError, which the CLI prints as one line) naming the file and what was expected: JSON that must
be an object, names read from a file that must stay inside the folder, safetensors headers checked
(length, dtypes, shapes, offsets within the file) before the safetensors library reads the file,
and weights that must be finite.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message names the file and what was expected."""


# safetensors' own limit; a header is a few KB per hundred tensors, so more is never a real file.
MAX_HEADER_BYTES = 100_000_000
MAX_JSON_BYTES = 100_000_000
FLOAT_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}
INT_DTYPES = {"I64": torch.int64, "I32": torch.int32}
_JSON_TYPES = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}


def one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``."""
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise CheckpointError(f"{path}: {size} bytes is too large for a JSON file (at most {MAX_JSON_BYTES})")
        value = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({one_line(err)})") from None
    except OSError as err:
        raise CheckpointError(f"{path}: cannot be read ({err.strerror or err})") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: expected a JSON object, found {_JSON_TYPES.get(type(value), 'null')}")
    return value


def inside(folder: Path, name: Any, source: Path) -> Path:
    """``folder / name`` for a file name read from ``source``, refused unless it stays in ``folder``.

    The check is on the name (no absolute path, no ``..``), made before anything is opened. Symlinks
    in the folder are followed: they are the folder's own files, not names a file can inject, and
    Hugging Face cache snapshots are folders of symlinks into ``../../blobs``."""
    if not isinstance(name, str) or not name:
        raise CheckpointError(f"{source}: expected a file name, got {name!r}")
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if os.path.isabs(name) or name.startswith(("/", "\\")) or ".." in parts:
        raise CheckpointError(f"{source}: file {name!r} is outside {folder}; only files inside the checkpoint are read")
    return folder / name


def read_header(path: Path, dtypes: dict[str, torch.dtype] = FLOAT_DTYPES) -> dict[str, tuple[str, tuple[int, ...]]]:
    """{tensor name: (dtype, shape)} of the safetensors file ``path``, refused unless the header
    fits the file, every tensor's bytes lie within it and its dtype is one of ``dtypes``."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            length = int.from_bytes(head, "little")
            if len(head) < 8 or length > min(size - 8, MAX_HEADER_BYTES):
                raise CheckpointError(_bad_length(path, head, length, size))
            raw = f.read(length)
    except OSError as err:
        raise CheckpointError(f"{path}: cannot be read ({err.strerror or err})") from None
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"{path}: not a safetensors file (its header is not JSON){_hint(head)}") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a safetensors file (its header is not a JSON object)")
    data_bytes = size - 8 - length
    out = {}
    for name, info in header.items():
        if name != "__metadata__":
            out[name] = _entry(path, name, info, data_bytes, dtypes)
    return out


def _entry(path: Path, name: str, info: Any, data_bytes: int, dtypes: dict[str, torch.dtype]):
    where = f"{path}: tensor {name!r}"
    if not isinstance(info, dict):
        raise CheckpointError(f"{where}: expected an object with dtype, shape and data_offsets")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not (isinstance(shape, list) and all(_is_int(d) and d >= 0 for d in shape)):
        raise CheckpointError(f"{where}: shape {shape!r} is not a list of non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)
            and 0 <= offsets[0] <= offsets[1]):
        raise CheckpointError(f"{where}: data_offsets {offsets!r} are not [begin, end] with 0 <= begin <= end")
    if offsets[1] > data_bytes:
        raise CheckpointError(
            f"{where} ends at byte {offsets[1]} of the data, but the file holds only {data_bytes} bytes of data "
            "(truncated file?)")
    if dtype not in dtypes:
        kind = "floating-point weights: " if dtypes is FLOAT_DTYPES else ""
        raise CheckpointError(f"{where} has dtype {dtype!r}; expected {kind}{', '.join(dtypes)}")
    needed = math.prod(shape) * dtypes[dtype].itemsize
    if offsets[1] - offsets[0] != needed:
        raise CheckpointError(
            f"{where}: data_offsets {offsets} hold {offsets[1] - offsets[0]} bytes, but {dtype}{shape} needs {needed}")
    return dtype, tuple(shape)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _bad_length(path: Path, head: bytes, length: int, size: int) -> str:
    if len(head) < 8:
        return f"{path}: not a safetensors file: only {size} bytes (it must start with an 8-byte header length)"
    if length > MAX_HEADER_BYTES:
        return (f"{path}: not a safetensors file (or a corrupt one): its header length field claims {length} bytes, "
                f"more than the {MAX_HEADER_BYTES} allowed{_hint(head)}")
    return (f"{path}: not a safetensors file (or a truncated one): its header length field claims {length} bytes, "
            f"but only {size - 8} follow{_hint(head)}")


def _hint(head: bytes) -> str:
    # torch.save writes a zip (PK..); older torch and plain pickle start with the protocol opcode.
    if head.startswith(b"PK") or head[:1] == b"\x80":
        return "; it looks like a pickle (torch.save) file, which trimode never loads"
    return ""


def meta_tensors(header: dict[str, tuple[str, tuple[int, ...]]]) -> dict[str, torch.Tensor]:
    """Data-less stand-ins for a header's tensors, to check a checkpoint before reading its data."""
    table = {**FLOAT_DTYPES, **INT_DTYPES}
    return {name: torch.empty(shape, dtype=table[dtype], device="meta") for name, (dtype, shape) in header.items()}


def load_safetensors(path: Path, dtypes: dict[str, torch.dtype] = FLOAT_DTYPES) -> dict[str, torch.Tensor]:
    """The tensors of ``path`` after :func:`read_header` accepted it; float tensors must be finite."""
    read_header(path, dtypes)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as err:  # what the header check cannot see, e.g. overlapping tensors
        raise CheckpointError(f"{path}: not a valid safetensors file ({one_line(err)})") from None
    for name, tensor in tensors.items():
        if tensor.is_floating_point():
            require_finite(tensor, f"{path}: tensor {name!r}")
    return tensors


def require_finite(tensor: torch.Tensor, where: str) -> None:
    """Refuse NaN or Inf weights. NaN and Inf always carry into a sum, so a finite sum proves the
    tensor finite in one cheap reduction; only a non-finite sum (or an overflow of finite values)
    pays for the exact element-wise check. numpy sums CPU tensors on one thread: torch's parallel
    sum waits on every worker thread, which on a busy machine made the check 30x slower."""
    if tensor.numel() == 0:
        return
    if tensor.device.type == "cpu" and tensor.dtype in (torch.float16, torch.float32, torch.float64):
        array = tensor.detach().numpy()
        if np.isfinite(array.sum(dtype=np.float32)):
            return
        bad = int(array.size - np.isfinite(array).sum())
    else:
        if bool(torch.isfinite(tensor.sum(dtype=torch.float32))):
            return
        bad = int((~torch.isfinite(tensor)).sum())
    if bad:
        raise CheckpointError(f"{where} has {bad} NaN or Inf values of {tensor.numel()}; expected finite weights")
