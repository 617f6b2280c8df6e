"""Decoding modes behind one interface (see :mod:`trimode.decoding.base`)."""

from __future__ import annotations

from ..model.transformer import Transformer
from .ar import ARDecoder
from .base import DecodeStats, Decoder, GenerationConfig, GenerationResult
from .diffusion import DiffusionDecoder
from .linear_spec import LinearSpecDecoder
from .quadratic_spec import QuadraticSpecDecoder

MODES = ("ar", "diffusion", "linear-spec", "quadratic-spec")
_DECODERS: dict[str, type[Decoder]] = {
    "ar": ARDecoder,
    "diffusion": DiffusionDecoder,
    "linear-spec": LinearSpecDecoder,
    "quadratic-spec": QuadraticSpecDecoder,
}


def decoder_for(mode: str, model: Transformer) -> Decoder:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    if mode not in _DECODERS:
        raise NotImplementedError(f"mode {mode!r} is not implemented yet (available: {', '.join(_DECODERS)})")
    return _DECODERS[mode](model)


__all__ = [
    "MODES",
    "ARDecoder",
    "DecodeStats",
    "Decoder",
    "DiffusionDecoder",
    "GenerationConfig",
    "GenerationResult",
    "LinearSpecDecoder",
    "QuadraticSpecDecoder",
    "decoder_for",
]
