"""Reading GGUF checkpoints (llama.cpp's file format) into Hugging Face-style pieces.

``GGUFFile`` parses a GGUF file (format versions 2 and 3, little-endian) and memory-maps it, so a
tensor is read and dequantized only when asked for. ``load_gguf`` turns a whole file into what the
rest of trimode works with: a ``config.json``-style dict, a state dict under ``LlamaForCausalLM``
names, and a ``tokenizers.Tokenizer``.

File layout, all little-endian::

    "GGUF" | u32 version | u64 tensor_count | u64 kv_count
    kv_count x (string key | u32 value_type | value)
    tensor_count x (string name | u32 n_dims | n_dims x u64 dim | u32 ggml_type | u64 offset)
    padding to general.alignment (default 32)
    tensor data; each tensor at data_start + offset

A string is a u64 byte length followed by UTF-8 bytes; an array is a u32 element type, a u64 count
and the elements. ``dim[0]`` is the innermost (contiguous) dimension, so the PyTorch shape is the
reversed dim list.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from ...files import CheckpointError
from .quants import DEQUANTIZERS, GGML_TYPES, dequantize

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS; more is a sign of a corrupt header


class GGUFError(CheckpointError):
    """A GGUF file is malformed, or uses something this reader does not support."""


# Fixed-size metadata value types: id -> struct format character (always read little-endian).
_VALUE_FORMATS: dict[int, str] = {
    0: "B",  # uint8
    1: "b",  # int8
    2: "H",  # uint16
    3: "h",  # int16
    4: "I",  # uint32
    5: "i",  # int32
    6: "f",  # float32
    7: "B",  # bool, one byte
    10: "Q",  # uint64
    11: "q",  # int64
    12: "d",  # float64
}
_BOOL, _STRING, _ARRAY = 7, 8, 9


@dataclass(frozen=True)
class GGUFTensorInfo:
    """Where a tensor lives in the file and what it holds.

    ``shape`` is in PyTorch order (the reverse of the GGUF dim list); ``offset`` is the absolute
    byte offset of the tensor's data in the file (the header stores it relative to the data
    section); ``nbytes`` is the size of the stored (possibly quantized) data.
    """

    name: str
    shape: tuple[int, ...]
    ggml_type: str
    offset: int
    nbytes: int

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)


class _Cursor:
    """Sequential little-endian reads over the mapped file; running off the end is a GGUFError."""

    def __init__(self, buffer: memoryview, path: Path) -> None:
        self.buffer = buffer
        self.path = path
        self.pos = 0

    def _need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > len(self.buffer):
            raise GGUFError(
                f"{self.path}: truncated file: expected {n} bytes for {what} at offset {self.pos}, "
                f"but the file is {len(self.buffer)} bytes long"
            )

    def scalar(self, value_type: int, what: str) -> Any:
        fmt = "<" + self._format(value_type, what)
        size = struct.calcsize(fmt)
        self._need(size, what)
        (value,) = struct.unpack_from(fmt, self.buffer, self.pos)
        self.pos += size
        return bool(value) if value_type == _BOOL else value

    def u32(self, what: str) -> int:
        return self.scalar(4, what)

    def u64(self, what: str) -> int:
        return self.scalar(10, what)

    def string(self, what: str) -> str:
        length = self.u64(f"the length of {what}")
        self._need(length, what)
        raw = bytes(self.buffer[self.pos : self.pos + length])
        self.pos += length
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise GGUFError(f"{self.path}: {what} is not valid UTF-8 ({e})") from None

    def array(self, value_type: int, count: int, what: str) -> np.ndarray:
        dtype = np.dtype("<" + self._format(value_type, what))
        self._need(count * dtype.itemsize, what)
        values = np.frombuffer(self.buffer, dtype=dtype, count=count, offset=self.pos).copy()
        self.pos += count * dtype.itemsize
        return values.astype(bool) if value_type == _BOOL else values

    def value(self, value_type: int, what: str) -> Any:
        if value_type == _STRING:
            return self.string(what)
        if value_type == _ARRAY:
            item_type = self.u32(f"the element type of {what}")
            count = self.u64(f"the length of {what}")
            if item_type == _STRING or item_type == _ARRAY:
                return [self.value(item_type, f"{what}[{i}]") for i in range(count)]
            return self.array(item_type, count, what)
        return self.scalar(value_type, what)

    def _format(self, value_type: int, what: str) -> str:
        if value_type not in _VALUE_FORMATS:
            raise GGUFError(f"{self.path}: {what} has unknown metadata value type {value_type}")
        return _VALUE_FORMATS[value_type]


class GGUFFile:
    """A parsed, memory-mapped GGUF file.

    The header (metadata and tensor directory) is parsed eagerly and checked against the file
    size; tensor data is only read by ``load``. Metadata strings are ``str``, arrays of strings (or
    of arrays) are lists, numeric and bool arrays are numpy arrays.
    """

    def __init__(self, path: str | PathLike[str]) -> None:
        self.path = Path(path)
        size = self.path.stat().st_size
        if size < len(GGUF_MAGIC):
            raise GGUFError(f"{self.path}: not a GGUF file: it is only {size} bytes long")
        self._data = np.memmap(self.path, dtype=np.uint8, mode="r")
        cursor = _Cursor(memoryview(self._data), self.path)

        magic = bytes(self._data[:4])
        if magic != GGUF_MAGIC:
            raise GGUFError(
                f"{self.path}: not a GGUF file: expected magic {GGUF_MAGIC!r}, found {magic!r}"
            )
        cursor.pos = 4
        self.version: int = cursor.u32("the format version")
        if self.version not in SUPPORTED_VERSIONS:
            swapped = int.from_bytes(self.version.to_bytes(4, "little"), "big")
            if swapped in SUPPORTED_VERSIONS:
                raise GGUFError(f"{self.path}: big-endian GGUF files are not supported")
            raise GGUFError(
                f"{self.path}: unsupported GGUF version {self.version} "
                f"(supported: {', '.join(map(str, SUPPORTED_VERSIONS))})"
            )
        n_tensors = cursor.u64("the tensor count")
        n_kv = cursor.u64("the metadata count")

        self.metadata: dict[str, Any] = {}
        for i in range(n_kv):
            key = cursor.string(f"metadata key #{i}")
            value_type = cursor.u32(f"the type of metadata {key!r}")
            if key in self.metadata:
                raise GGUFError(f"{self.path}: duplicate metadata key {key!r}")
            self.metadata[key] = cursor.value(value_type, f"metadata {key!r}")

        alignment = self.metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or isinstance(alignment, bool) or alignment <= 0:
            raise GGUFError(
                f"{self.path}: general.alignment must be a positive integer, got {alignment!r}"
            )
        self.alignment: int = alignment

        directory = [self._read_tensor_info(cursor, i) for i in range(n_tensors)]
        self.data_offset: int = -(-cursor.pos // alignment) * alignment
        self.tensors: dict[str, GGUFTensorInfo] = {}
        for name, shape, type_id, relative in directory:
            self.tensors[name] = self._check_tensor(name, shape, type_id, relative, size)

    def _read_tensor_info(
        self, cursor: _Cursor, index: int
    ) -> tuple[str, tuple[int, ...], int, int]:
        name = cursor.string(f"the name of tensor #{index}")
        n_dims = cursor.u32(f"the dimension count of tensor {name!r}")
        if n_dims > MAX_DIMS:
            raise GGUFError(
                f"{self.path}: tensor {name!r} claims {n_dims} dimensions (at most {MAX_DIMS})"
            )
        dims = [cursor.u64(f"dimension {d} of tensor {name!r}") for d in range(n_dims)]
        type_id = cursor.u32(f"the type of tensor {name!r}")
        relative = cursor.u64(f"the data offset of tensor {name!r}")
        return name, tuple(reversed(dims)), type_id, relative

    def _check_tensor(
        self, name: str, shape: tuple[int, ...], type_id: int, relative: int, file_size: int
    ) -> GGUFTensorInfo:
        where = f"{self.path}: tensor {name!r}"
        if name in self.tensors:
            raise GGUFError(f"{self.path}: duplicate tensor name {name!r}")
        ggml_type = GGML_TYPES.get(type_id)
        if ggml_type is None:
            raise GGUFError(f"{where} has unknown ggml type id {type_id}")
        # Blocks run along the innermost dimension, which must hold whole blocks.
        if shape and shape[-1] % ggml_type.block_size:
            raise GGUFError(
                f"{where} of type {ggml_type.name} has innermost dimension {shape[-1]}, "
                f"not a multiple of the block size {ggml_type.block_size}"
            )
        if relative % self.alignment:
            raise GGUFError(
                f"{where} has data offset {relative}, "
                f"not a multiple of the alignment {self.alignment}"
            )
        n_elements = math.prod(shape)  # exact: an int64 product of hostile dims can wrap to a small size
        start = self.data_offset + relative
        nbytes = ggml_type.nbytes(n_elements)
        if start + nbytes > file_size:
            raise GGUFError(
                f"{where}: tensor data outside the file: {nbytes} bytes at offset {start} "
                f"but the file is {file_size} bytes long (truncated file?)"
            )
        return GGUFTensorInfo(name, shape, ggml_type.name, start, nbytes)

    def raw(self, name: str) -> np.ndarray:
        """The tensor's stored bytes, as a read-only uint8 view into the mapped file."""
        info = self._info(name)
        return np.asarray(self._data[info.offset : info.offset + info.nbytes])

    def load(self, name: str) -> np.ndarray:
        """The tensor dequantized to a fresh float32 array in PyTorch shape order."""
        info = self._info(name)
        if info.ggml_type not in DEQUANTIZERS:
            raise GGUFError(
                f"{self.path}: tensor {name!r} has ggml type {info.ggml_type}, which cannot be "
                f"dequantized yet (supported: {', '.join(DEQUANTIZERS)})"
            )
        return dequantize(self.raw(name), info.ggml_type).reshape(info.shape)

    def _info(self, name: str) -> GGUFTensorInfo:
        try:
            return self.tensors[name]
        except KeyError:
            raise KeyError(f"{self.path}: no tensor named {name!r}") from None

    def __repr__(self) -> str:
        return (
            f"GGUFFile({str(self.path)!r}, version={self.version}, "
            f"{len(self.metadata)} metadata keys, {len(self.tensors)} tensors)"
        )


def require(gguf: GGUFFile, key: str) -> Any:
    """A metadata value that must be present."""
    if key not in gguf.metadata:
        raise GGUFError(f"{gguf.path}: required metadata key {key!r} is missing")
    return gguf.metadata[key]
