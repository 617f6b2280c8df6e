"""ggml tensor types and vectorized numpy dequantizers for GGUF tensor data.

Every quantized ggml type stores a tensor as a run of fixed-size blocks along the innermost
dimension. Each block is described here as a numpy structured dtype, so one ``view`` turns the raw
bytes into per-block fields and each dequantizer is a handful of whole-array operations: there is
no Python loop over blocks.

The layouts are the ones ggml writes (``block_q4_0`` and friends; all little-endian):

* legacy formats, 32 values per block: a float16 scale ``d`` (plus a float16 offset ``m`` for the
  ``_1`` variants) and packed quants. Within a block, value ``j`` (``j < 16``) lives in the low
  nibble of byte ``j`` and value ``j + 16`` in its high nibble; Q5 types keep the fifth bit of
  value ``j`` in bit ``j`` of a 32-bit ``qh`` word.
* k-quants, 256 values per "super-block" split into sub-blocks of 16 or 32 values, each sub-block
  with its own small integer scale (and min) that is itself scaled by float16 super-block factors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

QK = 32  # values per block of the legacy formats
QK_K = 256  # values per super-block of the k-quants


@dataclass(frozen=True)
class GGMLType:
    """A ggml tensor type: every ``block_size`` values take ``type_size`` bytes."""

    id: int
    name: str
    block_size: int
    type_size: int

    def nbytes(self, n_elements: int) -> int:
        return n_elements // self.block_size * self.type_size


# Every type id a GGUF file may name (ids 4, 5 and 31-33 were retired by ggml). Types without a
# dequantizer below are still listed so that files using them open, and so the error raised when
# such a tensor is loaded can name the type.
GGML_TYPES: dict[int, GGMLType] = {
    t.id: t
    for t in (
        GGMLType(0, "F32", 1, 4),
        GGMLType(1, "F16", 1, 2),
        GGMLType(2, "Q4_0", QK, 2 + QK // 2),
        GGMLType(3, "Q4_1", QK, 4 + QK // 2),
        GGMLType(6, "Q5_0", QK, 2 + 4 + QK // 2),
        GGMLType(7, "Q5_1", QK, 4 + 4 + QK // 2),
        GGMLType(8, "Q8_0", QK, 2 + QK),
        GGMLType(9, "Q8_1", QK, 4 + QK),
        GGMLType(10, "Q2_K", QK_K, QK_K // 16 + QK_K // 4 + 4),
        GGMLType(11, "Q3_K", QK_K, QK_K // 8 + QK_K // 4 + 12 + 2),
        GGMLType(12, "Q4_K", QK_K, 4 + 12 + QK_K // 2),
        GGMLType(13, "Q5_K", QK_K, 4 + 12 + QK_K // 8 + QK_K // 2),
        GGMLType(14, "Q6_K", QK_K, QK_K // 2 + QK_K // 4 + QK_K // 16 + 2),
        GGMLType(15, "Q8_K", QK_K, 4 + QK_K + QK_K // 8),
        GGMLType(16, "IQ2_XXS", QK_K, 2 + QK_K // 4),
        GGMLType(17, "IQ2_XS", QK_K, 2 + QK_K // 4 + QK_K // 32),
        GGMLType(18, "IQ3_XXS", QK_K, 2 + 3 * QK_K // 8),
        GGMLType(19, "IQ1_S", QK_K, 2 + QK_K // 8 + QK_K // 16),
        GGMLType(20, "IQ4_NL", QK, 2 + QK // 2),
        GGMLType(21, "IQ3_S", QK_K, 2 + QK_K // 4 + QK_K // 32 + QK_K // 8 + QK_K // 64),
        GGMLType(22, "IQ2_S", QK_K, 2 + QK_K // 4 + QK_K // 16),
        GGMLType(23, "IQ4_XS", QK_K, 2 + 2 + QK_K // 64 + QK_K // 2),
        GGMLType(24, "I8", 1, 1),
        GGMLType(25, "I16", 1, 2),
        GGMLType(26, "I32", 1, 4),
        GGMLType(27, "I64", 1, 8),
        GGMLType(28, "F64", 1, 8),
        GGMLType(29, "IQ1_M", QK_K, QK_K // 8 + QK_K // 16 + QK_K // 32),
        GGMLType(30, "BF16", 1, 2),
        GGMLType(34, "TQ1_0", QK_K, 2 + (QK_K - 4 * QK_K // 64) // 5 + QK_K // 64),
        GGMLType(35, "TQ2_0", QK_K, 2 + QK_K // 4),
        GGMLType(39, "MXFP4", QK, 1 + QK // 2),
    )
}
GGML_TYPES_BY_NAME: dict[str, GGMLType] = {t.name: t for t in GGML_TYPES.values()}

# Block layouts. Unaligned float16 fields are fine: numpy reads structured fields byte-wise.
_Q4_0 = np.dtype([("d", "<f2"), ("qs", "u1", QK // 2)])
_Q4_1 = np.dtype([("d", "<f2"), ("m", "<f2"), ("qs", "u1", QK // 2)])
_Q5_0 = np.dtype([("d", "<f2"), ("qh", "<u4"), ("qs", "u1", QK // 2)])
_Q5_1 = np.dtype([("d", "<f2"), ("m", "<f2"), ("qh", "<u4"), ("qs", "u1", QK // 2)])
_Q8_0 = np.dtype([("d", "<f2"), ("qs", "i1", QK)])
_Q2_K = np.dtype([("scales", "u1", 16), ("qs", "u1", 64), ("d", "<f2"), ("dmin", "<f2")])
_Q3_K = np.dtype([("hmask", "u1", 32), ("qs", "u1", 64), ("scales", "u1", 12), ("d", "<f2")])
_Q4_K = np.dtype([("d", "<f2"), ("dmin", "<f2"), ("scales", "u1", 12), ("qs", "u1", 128)])
_Q5_K = np.dtype(
    [("d", "<f2"), ("dmin", "<f2"), ("scales", "u1", 12), ("qh", "u1", 32), ("qs", "u1", 128)]
)
_Q6_K = np.dtype([("ql", "u1", 128), ("qh", "u1", 64), ("scales", "i1", 16), ("d", "<f2")])

_BITS_32 = np.arange(32, dtype=np.uint32)
_BITS_8 = np.arange(8, dtype=np.uint8)
_SHIFTS_2BIT = np.array([0, 2, 4, 6], dtype=np.uint8)


def _blocks(raw: np.ndarray, layout: np.dtype) -> np.ndarray:
    # A contiguous copy would double the memory traffic; a memmap slice is contiguous already.
    return np.ascontiguousarray(raw).view(layout)


def _f32(field: np.ndarray) -> np.ndarray:
    """A per-block float16 field as a float32 column that broadcasts over the block's values."""
    return field.astype(np.float32)[:, None]


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """(n, k) packed bytes -> (n, 2k): all low nibbles first, then all high nibbles."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1)


def dequantize_f32(raw: np.ndarray) -> np.ndarray:
    return raw.view("<f4").astype(np.float32)


def dequantize_f16(raw: np.ndarray) -> np.ndarray:
    return raw.view("<f2").astype(np.float32)


def dequantize_bf16(raw: np.ndarray) -> np.ndarray:
    # bfloat16 is the top half of a float32.
    return (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)


def dequantize_q4_0(raw: np.ndarray) -> np.ndarray:
    b = _blocks(raw, _Q4_0)
    q = _nibbles(b["qs"]).astype(np.int8) - np.int8(8)
    return (q * _f32(b["d"])).reshape(-1)


def dequantize_q4_1(raw: np.ndarray) -> np.ndarray:
    b = _blocks(raw, _Q4_1)
    q = _nibbles(b["qs"])
    return (q * _f32(b["d"]) + _f32(b["m"])).reshape(-1)


def _q5_high_bits(qh: np.ndarray) -> np.ndarray:
    """Bit j of the 32-bit ``qh`` word is the fifth bit (value 16) of value j."""
    return (((qh[:, None] >> _BITS_32) & 1) << 4).astype(np.uint8)


def dequantize_q5_0(raw: np.ndarray) -> np.ndarray:
    b = _blocks(raw, _Q5_0)
    q = (_nibbles(b["qs"]) | _q5_high_bits(b["qh"])).astype(np.int8) - np.int8(16)
    return (q * _f32(b["d"])).reshape(-1)


def dequantize_q5_1(raw: np.ndarray) -> np.ndarray:
    b = _blocks(raw, _Q5_1)
    q = _nibbles(b["qs"]) | _q5_high_bits(b["qh"])
    return (q * _f32(b["d"]) + _f32(b["m"])).reshape(-1)


def dequantize_q8_0(raw: np.ndarray) -> np.ndarray:
    b = _blocks(raw, _Q8_0)
    return (b["qs"] * _f32(b["d"])).reshape(-1)


def _crumbs(qs: np.ndarray) -> np.ndarray:
    """(n, 2, 32) bytes -> (n, 2, 4, 32) 2-bit fields: field k of each byte sits at bits 2k..2k+1.

    Q2_K and Q3_K split a super-block into two halves of 128 values; in each half the 32 bytes are
    read four times, each time at the next 2-bit shift, giving 4 x 32 consecutive values.
    """
    return (qs[:, :, None, :] >> _SHIFTS_2BIT[None, None, :, None]) & 3


def dequantize_q2_k(raw: np.ndarray) -> np.ndarray:
    b = _blocks(raw, _Q2_K)
    n = len(b)
    # 16 sub-blocks of 16 values; each has a 4-bit scale (low nibble) and a 4-bit min (high nibble).
    scale = _f32(b["d"]) * (b["scales"] & 0x0F)
    minimum = _f32(b["dmin"]) * (b["scales"] >> 4)
    q = _crumbs(b["qs"].reshape(n, 2, 32)).reshape(n, 16, 16)
    return (scale[:, :, None] * q - minimum[:, :, None]).reshape(-1)


def _q3_k_scales(packed: np.ndarray) -> np.ndarray:
    """12 bytes -> 16 signed 6-bit scales.

    The low 4 bits of scale i are the low (i < 8) or high (i >= 8) nibble of byte i % 8; the top 2
    bits are bits 2*(i // 4) .. 2*(i // 4) + 1 of byte 8 + i % 4. Scales are stored offset by 32.
    """
    n = len(packed)
    low = _nibbles(packed[:, :8])
    high = (packed[:, None, 8:12] >> _SHIFTS_2BIT[None, :, None]) & 3  # [i // 4, i % 4]
    return (low | (high.reshape(n, 16) << 4)).astype(np.int8) - np.int8(32)


def dequantize_q3_k(raw: np.ndarray) -> np.ndarray:
    b = _blocks(raw, _Q3_K)
    n = len(b)
    scale = _f32(b["d"]) * _q3_k_scales(b["scales"])
    q = _crumbs(b["qs"].reshape(n, 2, 32)).astype(np.int8)
    # Bit (4 * half + shift index) of hmask byte l is the third bit of the value read from qs
    # byte l; a clear bit means "subtract 4" (the quants are stored offset by 4).
    hbits = ((b["hmask"][:, None, :] >> _BITS_8[None, :, None]) & 1).reshape(n, 2, 4, 32)
    q -= ((1 - hbits) << 2).astype(np.int8)
    return (scale[:, :, None] * q.reshape(n, 16, 16)).reshape(-1)


def _k4_scales_mins(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """12 bytes -> 8 unsigned 6-bit scales and 8 6-bit mins (shared by Q4_K and Q5_K).

    Sub-blocks 0-3 keep scale and min in the low 6 bits of bytes 0-3 and 4-7. Sub-blocks 4-7 keep
    their low 4 bits in the nibbles of bytes 8-11 and their top 2 bits in the spare top 2 bits of
    bytes 0-3 (scale) and 4-7 (min).
    """
    first, second, third = packed[:, 0:4], packed[:, 4:8], packed[:, 8:12]
    scales = np.concatenate([first & 63, (third & 0x0F) | ((first >> 6) << 4)], axis=1)
    mins = np.concatenate([second & 63, (third >> 4) | ((second >> 6) << 4)], axis=1)
    return scales, mins


def _k4_quants(qs: np.ndarray) -> np.ndarray:
    """(n, 128) bytes -> (n, 8, 32): each run of 32 bytes gives one sub-block from its low nibbles
    and the next sub-block from its high nibbles."""
    n = len(qs)
    q = qs.reshape(n, 4, 1, 32)
    return np.concatenate([q & 0x0F, q >> 4], axis=2).reshape(n, 8, 32)


def dequantize_q4_k(raw: np.ndarray) -> np.ndarray:
    b = _blocks(raw, _Q4_K)
    scales, mins = _k4_scales_mins(b["scales"])
    scale = _f32(b["d"]) * scales
    minimum = _f32(b["dmin"]) * mins
    q = _k4_quants(b["qs"])
    return (scale[:, :, None] * q - minimum[:, :, None]).reshape(-1)


def dequantize_q5_k(raw: np.ndarray) -> np.ndarray:
    b = _blocks(raw, _Q5_K)
    scales, mins = _k4_scales_mins(b["scales"])
    scale = _f32(b["d"]) * scales
    minimum = _f32(b["dmin"]) * mins
    # Bit s of qh byte l is the fifth bit of value l of sub-block s.
    high = ((b["qh"][:, None, :] >> _BITS_8[None, :, None]) & 1) << 4
    q = _k4_quants(b["qs"]) | high
    return (scale[:, :, None] * q - minimum[:, :, None]).reshape(-1)


def dequantize_q6_k(raw: np.ndarray) -> np.ndarray:
    b = _blocks(raw, _Q6_K)
    n = len(b)
    # Each half of 128 values uses 64 ql bytes and 32 qh bytes. Its four runs of 32 values take
    # their low 4 bits from the low nibbles of ql[0:32], ql[32:64], then the high nibbles of the
    # same, and their top 2 bits from successive 2-bit fields of qh[0:32].
    low = _nibbles(b["ql"].reshape(n, 2, 64)).reshape(n, 2, 4, 32)
    high = _crumbs(b["qh"].reshape(n, 2, 32))
    q = (low | (high << 4)).astype(np.int8) - np.int8(32)
    scale = _f32(b["d"]) * b["scales"]  # 16 signed 8-bit scales, one per 16 values
    return (scale[:, :, None] * q.reshape(n, 16, 16)).reshape(-1)


DEQUANTIZERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "F32": dequantize_f32,
    "F16": dequantize_f16,
    "BF16": dequantize_bf16,
    "Q4_0": dequantize_q4_0,
    "Q4_1": dequantize_q4_1,
    "Q5_0": dequantize_q5_0,
    "Q5_1": dequantize_q5_1,
    "Q8_0": dequantize_q8_0,
    "Q2_K": dequantize_q2_k,
    "Q3_K": dequantize_q3_k,
    "Q4_K": dequantize_q4_k,
    "Q5_K": dequantize_q5_k,
    "Q6_K": dequantize_q6_k,
}


def dequantize(raw: np.ndarray, type_name: str) -> np.ndarray:
    """Raw little-endian block bytes (uint8, whole blocks) of ``type_name`` -> flat float32 values.

    Raises ``KeyError`` for a type without a dequantizer; callers turn that into a file-level error.
    """
    return DEQUANTIZERS[type_name](np.asarray(raw, dtype=np.uint8))
