"""Serving engine: continuous batching over the step-wise decoders, with ``auto`` mode."""

from .auto import AutoDecoder
from .request import Event, Request
from .scheduler import ENGINE_MODES, Engine, EngineFull

__all__ = ["ENGINE_MODES", "AutoDecoder", "Engine", "EngineFull", "Event", "Request"]
