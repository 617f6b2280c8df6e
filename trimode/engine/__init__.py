"""Serving engine: continuous batching over the step-wise decoders, with ``auto`` mode."""

from .auto import AutoDecoder
from .request import Event, Request
from .engine import Engine, EngineFull

__all__ = ["AutoDecoder", "Engine", "EngineFull", "Event", "Request"]
