"""Decoding modes behind one interface (see :mod:`trimode.decoding.base`)."""

from __future__ import annotations

from ..model.transformer import Transformer
from .ar import ARDecoder
from .base import DecodeStats, Decoder, GenerationConfig, GenerationResult

MODES = ("ar", "diffusion", "linear-spec", "quadratic-spec")
_DECODERS: dict[str, type[Decoder]] = {"ar": ARDecoder}


def decoder_for(mode: str, model: Transformer) -> Decoder:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    if mode not in _DECODERS:
        raise NotImplementedError(f"mode {mode!r} is not implemented yet (available: {', '.join(_DECODERS)})")
    return _DECODERS[mode](model)


__all__ = ["MODES", "ARDecoder", "DecodeStats", "Decoder", "GenerationConfig", "GenerationResult", "decoder_for"]
