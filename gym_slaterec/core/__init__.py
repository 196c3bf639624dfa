"""Simulator core: batched numpy over users, no Gymnasium dependency."""

from .config import ENV_PRESETS, SimulatorConfig, preset
from .embeddings import ItemCatalogue, fingerprint, generate_item_embeddings, load_item_embeddings
from .rng import BatchRNG
from .simulator import TopicRecSimulator, Turn
from .topk import top_k

__all__ = [
    "ENV_PRESETS",
    "SimulatorConfig",
    "preset",
    "ItemCatalogue",
    "fingerprint",
    "generate_item_embeddings",
    "load_item_embeddings",
    "BatchRNG",
    "TopicRecSimulator",
    "Turn",
    "top_k",
]
