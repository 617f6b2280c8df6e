"""Model: configuration-driven transformer, rotary embeddings, weight mapping and loading."""

from .loading import DRAFT_ADAPTER, CheckpointError, LoadedModel, build_model, load, new_model, save_pretrained
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
