"""Serving engine: continuous batching over the step-wise decoders, with ``auto`` mode."""

from .auto import AutoDecoder
from .engine import Engine, EngineFull
from .request import Event, Request

__all__ = ["AutoDecoder", "Engine", "EngineFull", "Event", "Request"]
