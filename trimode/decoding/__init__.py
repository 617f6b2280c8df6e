"""Decoding modes behind one interface (see :mod:`trimode.decoding.base`); what each mode needs is
in :mod:`trimode.decoding.spec`."""

from __future__ import annotations

from ..model.transformer import Transformer
from .ar import ARDecoder
from .base import Decoder, DecodeStats, GenerationConfig, GenerationResult, ModeSettings
from .diffusion import DiffusionDecoder
from .linear_spec import LinearSpecDecoder
from .quadratic_spec import QuadraticSpecDecoder
from .spec import ENGINE_MODES, MODES, SPECS, ModeSpec, spec_for, thresholds

DECODERS: dict[str, type[Decoder]] = {d.mode: d for d in (ARDecoder, DiffusionDecoder, LinearSpecDecoder, QuadraticSpecDecoder)}
assert tuple(sorted(DECODERS)) == tuple(sorted(MODES)), "every mode of trimode.decoding.spec has a decoder"


def decoder_for(mode: str, model: Transformer) -> Decoder:
    spec_for(mode)  # a clear error for an unknown mode
    return DECODERS[mode](model)


__all__ = [
    "DECODERS",
    "ENGINE_MODES",
    "MODES",
    "SPECS",
    "ARDecoder",
    "DecodeStats",
    "Decoder",
    "DiffusionDecoder",
    "GenerationConfig",
    "GenerationResult",
    "LinearSpecDecoder",
    "ModeSettings",
    "ModeSpec",
    "QuadraticSpecDecoder",
    "decoder_for",
    "spec_for",
    "thresholds",
]
