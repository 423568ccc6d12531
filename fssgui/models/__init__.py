"""Model adapters and their registry. Imports no Qt."""
from .base import EpisodeTensors, FSSModel, Prediction  # noqa: F401
from .registry import ModelEntry, build_model, get_entry, list_models, register, resolve_device  # noqa: F401
