"""Model: configuration-driven transformer, rotary embeddings, weight mapping and loading."""

from ..files import CheckpointError
from .adapters import DRAFT_ADAPTER
from .loading import LoadedModel, build_model, load, new_model, save_pretrained
from .transformer import Transformer

__all__ = [
    "DRAFT_ADAPTER",
    "CheckpointError",
    "LoadedModel",
    "Transformer",
    "build_model",
    "load",
    "new_model",
    "save_pretrained",
]
